"""Semi-supervised split files: nested, seeded labelled subsets of a training set.

:func:`make_cityscapes_splits` writes the Cityscapes 1/16, 1/8, 1/4 and 1/2 splits of the 2975
``train`` images (186, 372, 744 and 1488 labelled images, the sizes of the CPS / U2PL / PRCL
protocols) as split files that :class:`segproto.data.CityscapesDataset` reads::

    out_dir/train_labeled_1-{16,8,4,2}.txt     labelled part, one <city>/<city>_<seq>_<frame> a line
    out_dir/train_unlabeled_1-{16,8,4,2}.txt   the rest of train

Two sources of labelled lists (``lists=``):

- ``"u2pl"``: the lists published with U2PL (Wang et al., CVPR 2022; ``data/splits`` of
  github.com/Haochen-Wang409/U2PL, Apache-2.0), which PRCL's experiments use; shipped in
  ``segproto/data/split_lists/u2pl`` (:func:`published_labelled`). Numbers on these compare
  image for image with the papers'. The unlabelled part is the rest of the user's ``train``.
- ``"seeded"`` (our own draws, below): the same sizes, other images; for datasets or fractions
  with no published list.

Any other list can be used by writing it into the same files (one name per line; bare
``<city>_<seq>_<frame>`` names are read too).

The subsets are **nested** (1/16 within 1/8 within 1/4 within 1/2): one permutation of the
sorted names, drawn from ``numpy.random.default_rng([seed, n])``, and the labelled part of 1/k
is its first ``ceil(n / k)`` entries; files list names in sorted order. The same names and seed
give the same files on every machine.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from .cityscapes import IMG_SUFFIX, LAYOUT
from .convert_common import write_list

__all__ = ["FRACTIONS", "PUBLISHED", "published_labelled", "published_splits", "nested_splits", "write_splits",
           "cityscapes_train_names", "make_cityscapes_splits"]

#: The labelled fractions ``1/k`` of the semi-supervised protocols.
FRACTIONS: tuple[int, ...] = (16, 8, 4, 2)

#: ``{source: {dataset: labelled-set sizes}}`` of the shipped published lists
#: (``segproto/data/split_lists/<source>/<dataset>/labeled_<n>.txt``).
PUBLISHED: dict[str, dict[str, tuple[int, ...]]] = {
    "u2pl": {"voc": (92, 183, 366, 732, 1464), "cityscapes": (186, 372, 744, 1488)},
}


def published_labelled(dataset: str, n: int, source: str = "u2pl") -> list[str]:
    """The labelled names of a published split, in the published order.

    Args:
        dataset: ``"voc"`` (VOC 2012 image ids) or ``"cityscapes"`` (``<city>/<city>_<seq>_<frame>``).
        n: Labelled-set size (see :data:`PUBLISHED`).
        source: Whose lists (``"u2pl"``).

    Raises:
        ValueError: An unknown source, dataset or size (the message lists the known ones).
    """
    sizes = PUBLISHED.get(source, {}).get(dataset)
    if sizes is None:
        raise ValueError(f"no published split lists for source={source!r}, dataset={dataset!r}; known: "
                         f"{ {s: sorted(d) for s, d in PUBLISHED.items()} }")
    if int(n) not in sizes:
        raise ValueError(f"no published {source} {dataset} split with {n} labelled images; known sizes: {list(sizes)}")
    ref = resources.files("segproto.data").joinpath("split_lists", source, dataset, f"labeled_{int(n)}.txt")
    return [ln.strip() for ln in ref.read_text().splitlines() if ln.strip()]


def published_splits(dataset: str, names: Sequence[str], sizes: Sequence[int], source: str = "u2pl",
                     where: str = "the training set") -> dict[int, tuple[list[str], list[str]]]:
    """Published labelled lists and their complements in ``names`` (the user's training set).

    Returns:
        ``{n: (labelled, unlabelled)}``, both sorted.

    Raises:
        ValueError: A published name is not in ``names`` (the message names ``where``, how many
            are missing and a few of them: a different dataset version or an incomplete copy).
    """
    pool = set(names)
    out = {}
    for n in sizes:
        lab = published_labelled(dataset, n, source)
        missing = [x for x in lab if x not in pool]
        if missing:
            raise ValueError(f"{len(missing)} of the {n} images of the published {source} {dataset} split are not in "
                             f"{where} (e.g. {missing[:3]}); is the dataset copy complete?")
        chosen = set(lab)
        out[int(n)] = (sorted(chosen), sorted(pool - chosen))
    return out


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
            write_list(path, names, head)
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
                           fractions: Sequence[int] = FRACTIONS, lists: str = "seeded") -> list[Path]:
    """Writes the semi-supervised Cityscapes split files (see the module doc).

    Args:
        root: Cityscapes root in the official layout (``leftImg8bit/train/<city>/...``).
        out_dir: Output folder; default ``root/splits`` (what ``split_file: splits/{split}.txt``
            reads, e.g. in ``configs/prcl/cityscapes_r101_1-16.yaml``).
        seed: Permutation seed (``lists="seeded"`` only).
        fractions: The ``k`` of each fraction ``1/k``.
        lists: ``"seeded"`` (nested draws) or ``"u2pl"`` (the published lists: 1/16 = 186,
            1/8 = 372, 1/4 = 744, 1/2 = 1488 of the 2975 train images).

    Returns:
        The written split files.
    """
    names = cityscapes_train_names(root)
    out = Path(root).expanduser() / "splits" if out_dir is None else Path(out_dir)
    if lists == "seeded":
        header = f"Cityscapes train, segproto.data.datasets.splits.make_cityscapes_splits seed={seed}:"
        return write_splits(nested_splits(names, fractions, seed), out, "train", header)
    sizes = {k: math.ceil(2975 / k) for k in fractions}
    where = f"{Path(root).expanduser() / 'leftImg8bit' / 'train'} ({len(names)} images)"
    by_n = published_splits("cityscapes", names, list(sizes.values()), lists, where)
    header = f"Cityscapes train, {lists} published list:"
    return write_splits({k: by_n[n] for k, n in sizes.items()}, out, "train", header)
