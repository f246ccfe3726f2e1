"""Semi-supervised split files: nested, seeded labelled subsets of a training set.

:func:`make_cityscapes_splits` writes the Cityscapes 1/16, 1/8, 1/4 and 1/2 splits of the 2975
``train`` images (186, 372, 744 and 1488 labelled images, the sizes of the CPS / U2PL / PRCL
protocols) as split files that :class:`segproto.data.CityscapesDataset` reads::

    out_dir/train_labeled_1-{16,8,4,2}.txt     labelled part, one <city>/<city>_<seq>_<frame> a line
    out_dir/train_unlabeled_1-{16,8,4,2}.txt   the rest of train

The published lists of CPS (Chen et al., CVPR 2021) and U2PL (Wang et al., CVPR 2022) cannot be
downloaded here, so these are our own draws: the same sizes, but not the same images, so numbers
are comparable in protocol, not image for image. To use the published lists instead, put them
in the same files (one name per line; bare ``<city>_<seq>_<frame>`` names are read too).

The subsets are **nested** (1/16 within 1/8 within 1/4 within 1/2): one permutation of the
sorted names, drawn from ``numpy.random.default_rng([seed, n])``, and the labelled part of 1/k
is its first ``ceil(n / k)`` entries; files list names in sorted order. The same names and seed
give the same files on every machine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .cityscapes import IMG_SUFFIX, LAYOUT

__all__ = ["FRACTIONS", "nested_splits", "write_splits", "cityscapes_train_names", "make_cityscapes_splits"]

#: The labelled fractions ``1/k`` of the semi-supervised protocols.
FRACTIONS: tuple[int, ...] = (16, 8, 4, 2)


def nested_splits(names: Sequence[str], fractions: Sequence[int] = FRACTIONS,
                  seed: int = 0) -> dict[int, tuple[list[str], list[str]]]:
    """Nested labelled / unlabelled partitions of ``names``.

    Args:
        names: Training sample names (any order; sorted first, duplicates refused).
        fractions: The ``k`` of each labelled fraction ``1/k``.
        seed: Seed of the single permutation all fractions are cut from.

    Returns:
        ``{k: (labelled, unlabelled)}``, both sorted; ``len(labelled) == ceil(n / k)``, and the
        labelled part of a larger ``k`` is inside the one of a smaller ``k``.
    """
    ordered = sorted(names)
    if len(set(ordered)) != len(ordered):
        raise ValueError("nested_splits: duplicate names")
    n = len(ordered)
    if n == 0:
        raise ValueError("nested_splits: no names to split")
    bad = [k for k in fractions if not isinstance(k, int) or k < 1]
    if bad:
        raise ValueError(f"nested_splits: fractions must be integers >= 1 (1/k), got {bad}")
    perm = np.random.default_rng([int(seed), n]).permutation(n)
    out = {}
    for k in fractions:
        chosen = set(perm[: math.ceil(n / k)].tolist())
        out[k] = ([ordered[i] for i in range(n) if i in chosen],
                  [ordered[i] for i in range(n) if i not in chosen])
    return out


def write_splits(splits: dict[int, tuple[list[str], list[str]]], out_dir: str | Path, prefix: str = "train",
                 header: str = "") -> list[Path]:
    """Writes ``{prefix}_labeled_1-k.txt`` / ``{prefix}_unlabeled_1-k.txt`` per fraction.

    Args:
        splits: Output of :func:`nested_splits`.
        out_dir: Folder (created).
        prefix: Split name prefix; ``train`` makes the names read under ``leftImg8bit/train``.
        header: Optional ``#`` comment line written first (split readers skip it).

    Returns:
        The written paths, labelled then unlabelled per fraction.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (lab, unl) in splits.items():
        total = len(lab) + len(unl)
        for kind, names in (("labeled", lab), ("unlabeled", unl)):
            path = out / f"{prefix}_{kind}_1-{k}.txt"
            head = f"# {header} 1/{k} {kind}: {len(names)} of {total}\n" if header else ""
            path.write_text(head + "".join(f"{n}\n" for n in names))
            written.append(path)
    return written


def cityscapes_train_names(root: str | Path, subset: str = "train") -> list[str]:
    """Sorted ``<city>/<city>_<seq>_<frame>`` names of ``root/leftImg8bit/<subset>``.

    Raises:
        FileNotFoundError: No such folder or no images in it (the message names the path and
            the expected layout).
    """
    root = Path(root).expanduser()
    img_dir = root / "leftImg8bit" / subset
    if not img_dir.is_dir():
        held = sorted(p.name for p in root.iterdir())[:10] if root.is_dir() else None
        where = f"(the root holds {held})" if held is not None else "(the root does not exist)"
        raise FileNotFoundError(f"Cityscapes image folder not found: {img_dir}; is {root} the Cityscapes root? "
                                f"Expected the official layout {LAYOUT} {where}")
    names = sorted(f"{p.parent.name}/{p.name[:-len(IMG_SUFFIX)]}" for p in img_dir.glob(f"*/*{IMG_SUFFIX}"))
    if not names:
        raise FileNotFoundError(f"no '<city>/*{IMG_SUFFIX}' images under {img_dir} "
                                f"(expected the official layout {LAYOUT})")
    return names


def make_cityscapes_splits(root: str | Path, out_dir: str | Path | None = None, seed: int = 0,
                           fractions: Sequence[int] = FRACTIONS) -> list[Path]:
    """Writes the nested semi-supervised Cityscapes split files (see the module doc).

    Args:
        root: Cityscapes root in the official layout (``leftImg8bit/train/<city>/...``).
        out_dir: Output folder; default ``root/splits`` (what ``split_file: splits/{split}.txt``
            reads, e.g. in ``configs/prcl/cityscapes_r101_1-16.yaml``).
        seed: Permutation seed.
        fractions: The ``k`` of each fraction ``1/k``.

    Returns:
        The written split files.
    """
    names = cityscapes_train_names(root)
    out = Path(root).expanduser() / "splits" if out_dir is None else Path(out_dir)
    header = f"Cityscapes train, segproto.data.splits.make_cityscapes_splits seed={seed}:"
    return write_splits(nested_splits(names, fractions, seed), out, "train", header)
