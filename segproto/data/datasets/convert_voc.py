"""PASCAL converters: PASCAL-Context 459 -> 60-class PNGs, SBD + VOC 2012 -> ``SegmentationClassAug``,
and the semi-supervised VOC split lists (see :mod:`.convert` for the table of converters)."""

from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from .convert_common import checked_labels, need_scipy, run_jobs, save_index_png, write_list
from ..pipeline.dataset import DatasetError, load_label, read_split
from .standard import VOC_ENCODING
from .std_classes import PASCAL_CONTEXT59_LABELS

__all__ = ["VOC_SEMI_SIZES", "convert_pascal_context", "convert_voc_aug", "make_voc_splits", "pascal_context_lut"]

#: Labelled-set sizes of the semi-supervised VOC protocol (CPS, U2PL, PRCL): 1/16, 1/8, 1/4, 1/2 of
#: the 1464 images of the official ``train.txt`` (which is itself the largest labelled set).
VOC_SEMI_SIZES: tuple[int, ...] = (92, 183, 366, 732)


# --- PASCAL-Context -----------------------------------------------------------------------------

def pascal_context_lut() -> np.ndarray:
    """65536-entry table: 459-class LabelMap id -> 0..59 (the 59 classes in id order: 1..59,
    everything else 0 = background / other)."""
    lut = np.zeros(1 << 16, dtype=np.uint8)
    for index, (label_id, _) in enumerate(PASCAL_CONTEXT59_LABELS, start=1):
        lut[label_id] = index
    return lut


def _context_one(mat: Path, out_dir: Path) -> None:
    from scipy.io import loadmat

    data = loadmat(mat)
    if "LabelMap" not in data:
        raise DatasetError(f"{mat}: no 'LabelMap' variable (keys {sorted(k for k in data if not k.startswith('__'))}); "
                           "expected a PASCAL-Context trainval/*.mat file")
    raw = np.asarray(data["LabelMap"]).astype(np.int64)
    if raw.ndim != 2 or (raw < 0).any() or (raw > 459).any():
        raise DatasetError(f"{mat}: LabelMap must be a 2-D map of the 459 PASCAL-Context class ids (0..459), "
                           f"got shape {raw.shape}, values {int(raw.min())}..{int(raw.max())}")
    save_index_png(pascal_context_lut()[raw], out_dir / f"{mat.stem}.png")


def _context_splits(src: Path, dst: Path) -> tuple[dict[str, list[str]], str]:
    for js in (src / "trainval_merged.json", src.parent / "trainval_merged.json", dst / "trainval_merged.json"):
        if js.is_file():
            splits: dict[str, list[str]] = {"train": [], "val": []}
            for img in json.loads(js.read_text())["images"]:
                if img.get("phase") in splits:
                    sid = str(img["image_id"])
                    splits[img["phase"]].append(f"{sid[:4]}_{sid[4:]}")
            return splits, str(js)
    main = dst / "ImageSets" / "Main"
    if (main / "train.txt").is_file() and (main / "val.txt").is_file():
        return {s: [n.split()[0] for n in read_split(main / f"{s}.txt")] for s in ("train", "val")}, str(main)
    raise FileNotFoundError(f"PASCAL-Context: no train/val split found: looked for trainval_merged.json in {src}, "
                            f"{src.parent} and {dst}, and for the VOC 2010 lists {main}/{{train,val}}.txt")


def convert_pascal_context(src: str | Path, dst: str | Path, num_workers: int = 0) -> int:
    """PASCAL-Context 459-class ``.mat`` annotations -> the 60-class PNGs of the ``pascal_context59`` kind.

    Reads the original release (``trainval.tar.gz`` of cs.stanford.edu/~roozbeh/pascal-context:
    ``trainval/<name>.mat`` with a ``LabelMap`` of the 459 class ids) with ``scipy.io.loadmat``,
    so the Detail API is not needed. The 59 classes of :data:`~segproto.data.datasets.std_classes.PASCAL_CONTEXT59_LABELS`
    become 1..59 in id order, every other id 0 (the layout and values of mmsegmentation's
    ``pascal_context.py`` output). Split lists: the ``phase`` of each image in
    ``trainval_merged.json`` (the Detail annotations, if present next to ``src`` or in ``dst``;
    read as plain JSON), else VOC 2010's ``ImageSets/Main/{train,val}.txt`` (4998 / 5105 images:
    PASCAL-Context uses the VOC 2010 train/val split). Listed names without a ``.mat`` are
    skipped with a warning.

    Args:
        src: The unpacked release: a folder holding ``trainval/*.mat`` (or the ``trainval`` folder).
        dst: ``VOCdevkit/VOC2010``; writes ``SegmentationClassContext/<name>.png`` and
            ``ImageSets/SegmentationContext/{train,val}.txt``.
        num_workers: Processes (0: in this process).

    Returns:
        The number of files written (PNGs and the two lists).
    """
    need_scipy("convert_pascal_context")
    src, dst = Path(src), Path(dst)
    mat_dir = src / "trainval" if (src / "trainval").is_dir() else src
    mats = {p.stem: p for p in mat_dir.glob("*.mat")}
    if not mats:
        raise FileNotFoundError(f"PASCAL-Context: no .mat files in {mat_dir} (expected the unpacked trainval.tar.gz: "
                                "trainval/<name>.mat)")
    splits, source = _context_splits(src, dst)
    written = 0
    for split, names in splits.items():
        missing = [n for n in names if n not in mats]
        if missing:
            warnings.warn(f"PASCAL-Context: {len(missing)} {split} image(s) of {source} have no .mat in {mat_dir} "
                          f"(e.g. {missing[:3]}); skipped", stacklevel=2)
        kept = sorted(n for n in names if n in mats)
        written += run_jobs(partial(_context_one, out_dir=dst / "SegmentationClassContext"), [mats[n] for n in kept],
                        num_workers)
        write_list(dst / "ImageSets" / "SegmentationContext" / f"{split}.txt", kept)
        written += 1
    return written


# --- PASCAL VOC 2012 + SBD ----------------------------------------------------------------------

def _sbd_one(mat: Path, out_dir: Path) -> None:
    from scipy.io import loadmat

    try:
        seg = loadmat(mat, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
    except (KeyError, AttributeError) as exc:
        raise DatasetError(f"{mat}: expected an SBD cls/*.mat file with GTcls.Segmentation") from exc
    raw = np.asarray(seg).astype(np.int64)
    _, valid = VOC_ENCODING.lut()
    save_index_png(checked_labels(raw, valid, mat, VOC_ENCODING.description), out_dir / f"{mat.stem}.png")


def _voc_one(png: Path, out_dir: Path) -> None:
    raw = load_label(png)  # palette PNGs: their indices; RGB: refused
    _, valid = VOC_ENCODING.lut()
    save_index_png(checked_labels(raw, valid, png, VOC_ENCODING.description), out_dir / png.name)


def convert_voc_aug(src: str | Path, dst: str | Path, num_workers: int = 0) -> int:
    """SBD (Hariharan et al. 2011) class masks -> ``SegmentationClassAug`` and ``train_aug.txt``.

    Writes ``GTcls.Segmentation`` of every ``cls/*.mat`` (read with ``scipy.io.loadmat``) as an
    index PNG, then copies VOC's own ``SegmentationClass`` labels (palette PNGs, read as indices,
    with their 255 boundaries) over them for the VOC train/val images, as in the DeepLab recipe of
    the widely used ``SegmentationClassAug``; so the folder holds labels for the 10582 train_aug
    images and the 1449 val images. ``train_aug.txt`` = SBD train ∪ SBD val ∪ VOC train − VOC val
    (10582 names for the full datasets), sorted.

    Args:
        src: SBD ``benchmark_RELEASE`` (or its ``dataset`` folder) with ``cls/*.mat`` and
            ``train.txt`` / ``val.txt`` (if absent, every ``.mat`` counts).
        dst: ``VOCdevkit/VOC2012`` with ``ImageSets/Segmentation/{train,val}.txt`` and
            ``SegmentationClass``.
        num_workers: Processes (0: in this process).

    Returns:
        The number of files written (PNGs and ``train_aug.txt``).
    """
    need_scipy("convert_voc_aug")
    src, dst = Path(src), Path(dst)
    sbd = src / "dataset" if (src / "dataset" / "cls").is_dir() else src
    if not (sbd / "cls").is_dir():
        raise FileNotFoundError(f"SBD: {sbd / 'cls'} not found (expected benchmark_RELEASE/dataset/cls/<name>.mat)")
    sets = dst / "ImageSets" / "Segmentation"
    voc_train, voc_val = read_split(sets / "train.txt"), read_split(sets / "val.txt")
    mats = sorted((sbd / "cls").glob("*.mat"))
    if (sbd / "train.txt").is_file() and (sbd / "val.txt").is_file():
        sbd_names = set(read_split(sbd / "train.txt")) | set(read_split(sbd / "val.txt"))
    else:
        sbd_names = {m.stem for m in mats}
    out = dst / "SegmentationClassAug"
    written = run_jobs(partial(_sbd_one, out_dir=out), mats, num_workers)
    voc_pngs = [p for p in (dst / "SegmentationClass" / f"{n}.png" for n in sorted(set(voc_train) | set(voc_val)))
                if p.is_file()]
    written += run_jobs(partial(_voc_one, out_dir=out), voc_pngs, num_workers)
    have = {m.stem for m in mats} | {p.stem for p in voc_pngs}
    train_aug = sorted((sbd_names | set(voc_train)) - set(voc_val))
    unlabelled = [n for n in train_aug if n not in have]
    if unlabelled:
        raise FileNotFoundError(f"train_aug: {len(unlabelled)} image(s) have neither an SBD .mat nor a VOC label, "
                                f"e.g. {unlabelled[:3]}")
    write_list(sets / "train_aug.txt", train_aug)
    return written + 1


def make_voc_splits(voc_root: str | Path, out_dir: str | Path | None = None, seed: int = 0,
                    sizes: Sequence[int] = VOC_SEMI_SIZES, lists: str = "seeded") -> int:
    """Semi-supervised PASCAL VOC 2012 splits: labelled lists and their unlabelled complements.

    The protocol of CPS, U2PL and PRCL ("classic" VOC): the labelled images are drawn from the
    1464 finely annotated images of the official ``train.txt``, the unlabelled ones are the rest
    of ``train_aug`` (10582 - n). Labelled sets of ``sizes`` (92, 183, 366, 732) are nested
    prefixes of one permutation of ``train.txt`` drawn with ``numpy.random.default_rng(seed)``;
    the full ``train.txt`` is the largest (``train_labeled_1464``). With ``lists="seeded"`` these
    are our own draws (comparable in protocol, not image for image); ``lists="u2pl"`` writes the
    lists published with U2PL (shipped in ``segproto/data/split_lists/u2pl/voc``, see
    :mod:`segproto.data.datasets.splits`), which compare image for image with U2PL's and PRCL's numbers.

    Args:
        voc_root: ``VOCdevkit/VOC2012`` with ``ImageSets/Segmentation/{train,train_aug}.txt``.
        out_dir: Where to write; default ``voc_root/ImageSets/Segmentation`` (where the
            ``voc_aug`` dataset's ``split_file`` looks).
        seed: Permutation seed (``lists="seeded"`` only).
        sizes: Labelled-set sizes smaller than ``train.txt``, increasing.
        lists: ``"seeded"`` or ``"u2pl"`` (the published lists; every listed id must be in
            ``train.txt``).

    Returns:
        The number of files written: ``train_labeled_<n>.txt`` and ``train_unlabeled_<n>.txt`` for
        every size and for ``n = len(train.txt)``.
    """
    voc_root = Path(voc_root)
    sets = voc_root / "ImageSets" / "Segmentation"
    out = Path(out_dir) if out_dir is not None else sets
    train = sorted(set(read_split(sets / "train.txt")))
    if not (sets / "train_aug.txt").is_file():
        raise FileNotFoundError(f"split file not found: {sets / 'train_aug.txt'}; write it with "
                                "`python -m segproto.tools.convert voc_aug SBD_ROOT VOC2012_ROOT`")
    train_aug = set(read_split(sets / "train_aug.txt"))
    if not set(train) <= train_aug:
        extra = sorted(set(train) - train_aug)
        raise ValueError(f"{sets / 'train.txt'}: {len(extra)} image(s) are not in train_aug.txt (e.g. {extra[:3]}); "
                         "train_aug must contain the official train set")
    sizes = [int(n) for n in sizes]
    if sizes != sorted(set(sizes)) or not all(0 < n < len(train) for n in sizes):
        raise ValueError(f"make_voc_splits: sizes must increase within 1..{len(train) - 1} (train.txt holds "
                         f"{len(train)} images), got {sizes}")
    if lists == "seeded":
        order = [train[i] for i in np.random.default_rng(seed).permutation(len(train))]
        chosen = {n: sorted(order[:n]) for n in [*sizes, len(train)]}
    else:
        from .splits import published_splits
        where = f"{sets / 'train.txt'} ({len(train)} images)"
        chosen = {n: lab for n, (lab, _) in published_splits("voc", train, [*sizes, len(train)], lists, where).items()}
    written = 0
    for n, labelled in chosen.items():
        write_list(out / f"train_labeled_{n}.txt", labelled)
        write_list(out / f"train_unlabeled_{n}.txt", sorted(train_aug - set(labelled)))
        written += 2
    return written
