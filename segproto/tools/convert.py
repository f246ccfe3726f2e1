"""Dataset conversions: ``python -m segproto.tools.convert <dataset> SRC DST [--seed N] [--num-workers N]``.

One subcommand per converter (``python -m segproto.tools.convert --help`` lists them):

=====================  ======================================================================
``cityscapes``         ``SRC/gtFine/<subset>/<city>/*_gtFine_labelIds.png`` -> the same tree of
                       ``*_gtFine_labelTrainIds.png`` under ``DST`` (DST may be SRC). Optional:
                       the ``cityscapes`` dataset maps label ids to trainIds when it loads them.
``cityscapes_splits``  the 1/16, 1/8, 1/4, 1/2 semi-supervised split files of the 2975
                       train images of the Cityscapes root SRC, written to the folder DST
                       (``segproto.data.datasets.splits``; ``--lists u2pl`` the published lists,
                       ``--lists seeded --seed N`` our nested draws)
others                 ``segproto.data.datasets.convert.CONVERTERS`` when that module is installed
                       (``voc_aug``, ``coco_stuff``, ...)
=====================  ======================================================================

Mapillary Vistas v2.0 needs no conversion (its label PNGs hold class ids and are read as they
are); PASCAL-Part-108 label PNGs are made from the raw PASCAL-Part ``.mat`` files by
``pascal_part108``. A ``-`` in a name is read as ``_`` (``cityscapes-splits``).

An output file that already exists with the same content is left as it is (a rerun is a no-op); one
with other content is refused, naming it, unless ``--force``.

Exit status: 0 done; 2 for an unknown dataset or a bad argument; 1 for a missing SRC, an output that
exists with other content, a layout or label error (messages name the path).
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from segproto.cli import add_debug_arg, one_line
from segproto.data.datasets.cityscapes import LABEL_IDS_SUFFIX, LAYOUT, MAX_LABEL_ID, TRAIN_IDS_SUFFIX, id_to_train_id_lut
from segproto.data.pipeline.dataset import DatasetError, load_label
from segproto.data.datasets.convert_common import allow_replace, save_index_png
from segproto.data.datasets.splits import PUBLISHED, make_cityscapes_splits

__all__ = ["Converter", "convert_cityscapes", "cityscapes_splits", "converters", "main"]


@dataclass(frozen=True)
class Converter:
    """A subcommand: ``func(src, dst, **options)`` returns the number of files written."""

    name: str
    func: Callable[..., int]
    summary: str


def convert_cityscapes(src: str | Path, dst: str | Path, subsets: Sequence[str] = ("train", "val", "test")) -> int:
    """Writes ``*_gtFine_labelTrainIds.png`` next to a copy of the ``gtFine`` tree.

    Every ``SRC/gtFine/<subset>/<city>/<name>_gtFine_labelIds.png`` of the subsets present becomes
    ``DST/gtFine/<subset>/<city>/<name>_gtFine_labelTrainIds.png``: the 19 trainIds, 255 elsewhere,
    through :func:`segproto.data.datasets.cityscapes.id_to_train_id_lut` (what cityscapesscripts'
    ``createTrainIdLabelImgs`` writes).

    Returns:
        The number of PNGs written.

    Raises:
        FileNotFoundError: No ``SRC/gtFine`` or no labelIds PNG in it (the message names the
            path and the official layout).
        DatasetError: A labelIds PNG with values that are not label ids 0..33 (names the file).
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    gt = src / "gtFine"
    if not gt.is_dir():
        held = sorted(p.name for p in src.iterdir())[:10] if src.is_dir() else "nothing (no such folder)"
        raise FileNotFoundError(f"Cityscapes label folder not found: {gt}; is {src} the Cityscapes root? "
                                f"Expected the official layout {LAYOUT} (the root holds {held})")
    files = sorted(p for s in subsets for p in (gt / s).glob(f"*/*{LABEL_IDS_SUFFIX}"))
    if not files:
        raise FileNotFoundError(f"no '<city>/*{LABEL_IDS_SUFFIX}' files under {gt}/{{{','.join(subsets)}}} "
                                f"(expected the official layout {LAYOUT})")
    lut = id_to_train_id_lut(255)
    for path in files:
        ids = load_label(path)
        bad = (ids < 0) | (ids > MAX_LABEL_ID)
        if bad.any():
            raise DatasetError(f"{path}: values {np.unique(ids[bad])[:10].tolist()} are not Cityscapes label ids "
                               f"(0..{MAX_LABEL_ID}; {int(bad.sum())} pixels): unexpected label encoding "
                               "(a colour or instance PNG?)")
        out = dst / path.relative_to(src).parent / (path.name[:-len(LABEL_IDS_SUFFIX)] + TRAIN_IDS_SUFFIX)
        save_index_png(lut[ids], out)
    return len(files)


def cityscapes_splits(src: str | Path, dst: str | Path, seed: int = 0, lists: str = "seeded") -> int:
    """Semi-supervised split files of the Cityscapes root ``src`` into the folder ``dst``
    (:func:`segproto.data.datasets.splits.make_cityscapes_splits`); returns the number of files."""
    return len(make_cityscapes_splits(src, dst, seed, lists=lists))


_OWN = (Converter("cityscapes", convert_cityscapes, "Cityscapes labelIds PNGs -> labelTrainIds PNGs (optional)"),
        Converter("cityscapes_splits", cityscapes_splits,
                  "Cityscapes semi-supervised split files train_{labeled,unlabeled}_1-{16,8,4,2}.txt"))


def converters() -> dict[str, Converter]:
    """Ours, plus those of ``segproto.data.datasets.convert.CONVERTERS`` when that module exists."""
    out = {c.name: c for c in _OWN}
    try:
        from segproto.data.datasets.convert import CONVERTERS as std
    except ImportError:
        std = {}
    for name, func in std.items():
        doc = (inspect.getdoc(func) or name).splitlines()[0]
        out.setdefault(name, Converter(name, func, doc))
    return out


def _usage(table: dict[str, Converter]) -> str:
    width = max(len(n) for n in table)
    rows = "\n".join(f"  {n:<{width}}  {c.summary}" for n, c in sorted(table.items()))
    return ("usage: python -m segproto.tools.convert <dataset> SRC DST [options]\n\n"
            f"datasets:\n{rows}\n\n`python -m segproto.tools.convert <dataset> --help` shows a dataset's options.")


def _fail(msg: str, code: int) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point (see the module doc)."""
    args = list(sys.argv[1:] if argv is None else argv)
    table = converters()
    if not args or args[0] in ("-h", "--help"):
        print(_usage(table), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name = args[0].replace("-", "_")
    if name not in table:
        hint = difflib.get_close_matches(name, list(table), 1)
        _fail(f"unknown dataset '{args[0]}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
              + f"; known: {sorted(table)}", 2)
    conv = table[name]
    params = inspect.signature(conv.func).parameters
    p = argparse.ArgumentParser(prog=f"python -m segproto.tools.convert {name}", description=conv.summary)
    p.add_argument("src", metavar="SRC", help="the downloaded dataset (as unpacked)")
    p.add_argument("dst", metavar="DST", help="where to write (created)")
    if "seed" in params:
        p.add_argument("--seed", type=int, default=params["seed"].default, help="split seed (default %(default)s)")
    if "num_workers" in params:
        p.add_argument("--num-workers", type=int, default=0, help="worker processes (default 0: none)")
    if "lists" in params:
        p.add_argument("--lists", choices=["seeded", *PUBLISHED], default="seeded",
                       help="labelled lists: 'seeded' (our nested draws, --seed) or a published source "
                            "shipped with segproto ('u2pl': U2PL's lists, used by PRCL) (default %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="replace output files that exist with other content (default: refuse, naming the file)")
    add_debug_arg(p)
    a = p.parse_args(args[1:])
    src = Path(a.src).expanduser()
    if not src.exists():
        _fail(f"SRC not found: {src}", 1)
    kwargs = {k: getattr(a, k) for k in ("seed", "num_workers", "lists") if k in params}
    allow_replace(a.force)  # the command replaces files with other content only when asked
    try:
        written = conv.func(src, Path(a.dst).expanduser(), **kwargs)
    except (OSError, DatasetError, ValueError) as exc:  # a missing or unwritable path, a layout or label error
        if a.debug:
            raise
        _fail(one_line(exc), 1)
    finally:
        allow_replace(True)
    print(f"{name}: wrote {written} file(s) under {Path(a.dst).expanduser()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
