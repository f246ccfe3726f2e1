"""Conversions of official annotation releases to the label PNGs the standard dataset kinds read.

Pure functions ``(src, dst, ...) -> number of files written``; :data:`CONVERTERS` maps the names
used by ``python -m segproto.tools.convert <name> SRC DST`` to them:

==================  ===========================================================================
``coco20i``         COCO 2014 ``instances_{train,val}2014.json`` -> 81-label masks (0 = background,
                    1..80) ``DST/ann_dir/{train2014,val2014}`` for the few-shot folds (pycocotools)
``coco_stuff``      stuffthingmaps_trainval2017 id PNGs (0..181, 255) -> ``*_labelTrainIds.png``
                    (171 train ids) under ``DST/annotations/{train2017,val2017}``
``pascal_context``  PASCAL-Context ``trainval/*.mat`` LabelMaps (459 classes) -> 60-class PNGs
                    ``DST/SegmentationClassContext`` + ``ImageSets/SegmentationContext`` lists
                    (DST = ``VOCdevkit/VOC2010``), without the Detail API
``pascal_part108``  PASCAL-Part ``Annotations_Part/*.mat`` + VOC 2010 lists -> 108-class PNGs
                    ``DST/ann108_dir/{train,val}`` (our part merge table) + ``DST/img_dir`` links
``voc_aug``         SBD ``dataset/cls/*.mat`` -> ``DST/SegmentationClassAug`` index PNGs, VOC's own
                    labels copied over them, + ``ImageSets/Segmentation/train_aug.txt`` (10582)
``voc_splits``      semi-supervised VOC lists ``train_labeled_<n>.txt`` / ``train_unlabeled_<n>.txt``
==================  ===========================================================================

Every input label is checked: values outside the source's id range raise
:class:`~segproto.data.DatasetError` naming the file and the values; nothing is remapped silently.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from .dataset import DatasetError, load_label, read_split
from .datasets_std import COCO_IDS_ENCODING, VOC_ENCODING
from .pascal_part_convert import convert_pascal_part108
from .std_classes import PASCAL_CONTEXT59_LABELS

__all__ = ["CONVERTERS", "VOC_SEMI_SIZES", "convert_coco20i", "convert_coco_stuff", "convert_pascal_context", "convert_voc_aug",
           "make_voc_splits", "pascal_context_lut"]

#: Labelled-set sizes of the semi-supervised VOC protocol (CPS, U2PL, PRCL): 1/16, 1/8, 1/4, 1/2 of
#: the 1464 images of the official ``train.txt`` (which is itself the largest labelled set).
VOC_SEMI_SIZES: tuple[int, ...] = (92, 183, 366, 732)


def _need_scipy(what: str) -> None:
    if importlib.util.find_spec("scipy") is None:  # pragma: no cover - scipy is optional (installed in the dev venv)
        raise ImportError(f"{what} needs scipy (scipy.io.loadmat) to read MATLAB .mat files: pip install scipy")


def _run(fn: Callable[[Path], None], jobs: Sequence[Path], num_workers: int) -> int:
    if num_workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(num_workers) as pool:
            list(pool.map(fn, jobs, chunksize=64))
    else:
        for job in jobs:
            fn(job)
    return len(jobs)


def _write_list(path: Path, names: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))


def _save_index_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), "L").save(path)


def _checked(raw: np.ndarray, valid: np.ndarray, path: Path, what: str) -> np.ndarray:
    bad = (raw < 0) | (raw >= len(valid))
    if not bad.any():
        bad = ~valid[raw]
    if bad.any():
        raise DatasetError(f"{path}: values {np.unique(raw[bad])[:10].tolist()} are not {what} "
                           f"({int(bad.sum())} pixels)")
    return raw


# --- COCO-Stuff 164k ----------------------------------------------------------------------------

def _coco_one(src: Path, out_dir: Path) -> None:
    lut, valid = COCO_IDS_ENCODING.lut(255)
    raw = _checked(load_label(src), valid, src, COCO_IDS_ENCODING.description)
    _save_index_png(lut[raw], out_dir / f"{src.name[:-len('.png')]}_labelTrainIds.png")


def convert_coco_stuff(src: str | Path, dst: str | Path, num_workers: int = 0) -> int:
    """Official COCO-Stuff id PNGs -> 171 contiguous train ids.

    The mapping is :func:`segproto.data.datasets_std.coco_stuff_id_table`, derived from
    cocostuff's labels.txt: values 0..181 (labels.txt id - 1) of the 171 annotated classes take
    the train ids 0..170 in id order; 255 (unlabeled) and the 11 never-annotated thing ids stay
    255. (The ``coco_stuff164k`` dataset can also read the id PNGs directly, with
    ``seg_map_suffix: .png``.)

    Args:
        src: ``stuffthingmaps_trainval2017`` as unzipped (``train2017/*.png``, ``val2017/*.png``),
            or a ``coco_stuff164k`` root holding them in ``annotations/{train2017,val2017}``.
        dst: The ``coco_stuff164k`` root; writes ``annotations/{train2017,val2017}/<name>_labelTrainIds.png``.
        num_workers: Processes (0: in this process).

    Returns:
        The number of PNGs written.

    Raises:
        FileNotFoundError: No ``train2017``/``val2017`` folder of id PNGs under ``src``.
        DatasetError: A PNG holding values that are not stuffthingmaps ids, or a colour PNG.
    """
    src, dst = Path(src), Path(dst)
    written = 0
    found = False
    for subset in ("train2017", "val2017"):
        folder = next((f for f in (src / subset, src / "annotations" / subset) if f.is_dir()), None)
        if folder is None:
            continue
        found = True
        jobs = sorted(p for p in folder.glob("*.png") if not p.name.endswith("_labelTrainIds.png"))
        written += _run(partial(_coco_one, out_dir=dst / "annotations" / subset), jobs, num_workers)
    if not found:
        raise FileNotFoundError(f"COCO-Stuff: no id PNG folders under {src}: expected "
                                f"{src}/{{train2017,val2017}}/<12 digits>.png (stuffthingmaps_trainval2017.zip) "
                                f"or {src}/annotations/{{train2017,val2017}}/<12 digits>.png")
    return written


# --- COCO-20i (81-label masks of COCO 2014) ----------------------------------------------------

COCO20I_SUBSETS = ("train2014", "val2014")


def _coco20i_one(job: tuple[str, int, int, list], out_dir: Path) -> None:
    from pycocotools import mask as mask_utils

    stem, h, w, anns = job
    label = np.zeros((h, w), np.uint8)
    for cls, segm in anns:  # annotation order: a later instance paints over an earlier one
        if isinstance(segm, list):  # polygons: one object may have several parts
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
        elif isinstance(segm.get("counts"), list):  # uncompressed RLE (crowd regions)
            rle = mask_utils.frPyObjects(segm, h, w)
        else:
            rle = segm
        label[mask_utils.decode(rle).astype(bool)] = cls
    _save_index_png(label, out_dir / f"{stem}.png")


def convert_coco20i(src: str | Path, dst: str | Path, num_workers: int = 0) -> int:
    """COCO 2014 instance annotations -> the 81-label semantic masks COCO-20i is defined on.

    Every image of ``annotations/instances_<subset>2014.json`` gets ``DST/ann_dir/<subset>/<file
    stem>.png``: 0 = background, 1..80 = the COCO categories in increasing category-id order
    (:data:`segproto.data.fewshot.COCO_CLASSES`; the ids of ``builtin:coco20i``). Each
    annotation's polygons or RLE are decoded with pycocotools (the official COCO API) and painted
    in the order of the file, so where instances overlap the later one wins; crowd regions are
    painted with their class. Images with no annotation get an all-background mask. When
    ``SRC/<subset>`` holds the images, ``DST/img_dir/<subset>`` is made a link to it, giving the
    folder layout of ``configs/hdmnet/coco20i_r50.yaml``.

    Args:
        src: The COCO 2014 root: ``annotations/instances_{train,val}2014.json`` (from
            annotations_trainval2014.zip) and optionally ``{train,val}2014/*.jpg``.
        dst: The COCO-20i root (``ann_dir/``, ``img_dir/``).
        num_workers: Processes (0: in this process).

    Returns:
        The number of PNGs written.

    Raises:
        FileNotFoundError: Neither annotation file exists (the message names the expected paths).
        DatasetError: A file whose categories are not COCO's 80, or an annotation of an unknown
            category or a missing image (names the file and the id).
        ImportError: pycocotools is not installed.
    """
    if importlib.util.find_spec("pycocotools") is None:  # pragma: no cover - installed with .[datasets]/.[all]
        raise ImportError("convert_coco20i needs pycocotools (the COCO API) to decode the masks: pip install pycocotools")
    from .fewshot import COCO_CLASSES

    src, dst = Path(src), Path(dst)
    files = {s: src / "annotations" / f"instances_{s}.json" for s in COCO20I_SUBSETS}
    if not any(f.is_file() for f in files.values()):
        raise FileNotFoundError(f"COCO 2014: no instance annotations under {src}: expected "
                                f"{' or '.join(str(f) for f in files.values())} (annotations_trainval2014.zip)")
    written = 0
    for subset, path in files.items():
        if not path.is_file():
            continue
        with open(path) as f:
            coco = json.load(f)
        cats = sorted(coco.get("categories", []), key=lambda c: c["id"])
        names = tuple(c["name"] for c in cats)
        if names != COCO_CLASSES:
            raise DatasetError(f"{path}: categories {list(names)[:5]}... ({len(names)}) are not the 80 COCO "
                               "categories in id order; is this a COCO 2014/2017 instances file?")
        to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
        images = {im["id"]: (Path(im["file_name"]).stem, int(im["height"]), int(im["width"]), [])
                  for im in coco.get("images", [])}
        for ann in coco.get("annotations", []):
            if ann["category_id"] not in to_label:
                raise DatasetError(f"{path}: annotation {ann.get('id')} has category_id {ann['category_id']}, "
                                   f"not one of the {len(to_label)} categories of the file")
            if ann["image_id"] not in images:
                raise DatasetError(f"{path}: annotation {ann.get('id')} refers to image_id {ann['image_id']}, "
                                   "which the file's 'images' does not list")
            images[ann["image_id"]][3].append((to_label[ann["category_id"]], ann["segmentation"]))
        jobs = [images[k] for k in sorted(images)]
        written += _run(partial(_coco20i_one, out_dir=dst / "ann_dir" / subset), jobs, num_workers)
        img_src, img_dst = src / subset, dst / "img_dir" / subset
        if img_src.is_dir() and not img_dst.exists():
            img_dst.parent.mkdir(parents=True, exist_ok=True)
            img_dst.symlink_to(img_src.resolve(), target_is_directory=True)
    return written


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
    _save_index_png(pascal_context_lut()[raw], out_dir / f"{mat.stem}.png")


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
    so the Detail API is not needed. The 59 classes of :data:`~segproto.data.std_classes.PASCAL_CONTEXT59_LABELS`
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
    _need_scipy("convert_pascal_context")
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
        written += _run(partial(_context_one, out_dir=dst / "SegmentationClassContext"), [mats[n] for n in kept],
                        num_workers)
        _write_list(dst / "ImageSets" / "SegmentationContext" / f"{split}.txt", kept)
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
    _save_index_png(_checked(raw, valid, mat, VOC_ENCODING.description), out_dir / f"{mat.stem}.png")


def _voc_one(png: Path, out_dir: Path) -> None:
    raw = load_label(png)  # palette PNGs: their indices; RGB: refused
    _, valid = VOC_ENCODING.lut()
    _save_index_png(_checked(raw, valid, png, VOC_ENCODING.description), out_dir / png.name)


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
    _need_scipy("convert_voc_aug")
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
    written = _run(partial(_sbd_one, out_dir=out), mats, num_workers)
    voc_pngs = [p for p in (dst / "SegmentationClass" / f"{n}.png" for n in sorted(set(voc_train) | set(voc_val)))
                if p.is_file()]
    written += _run(partial(_voc_one, out_dir=out), voc_pngs, num_workers)
    have = {m.stem for m in mats} | {p.stem for p in voc_pngs}
    train_aug = sorted((sbd_names | set(voc_train)) - set(voc_val))
    unlabelled = [n for n in train_aug if n not in have]
    if unlabelled:
        raise FileNotFoundError(f"train_aug: {len(unlabelled)} image(s) have neither an SBD .mat nor a VOC label, "
                                f"e.g. {unlabelled[:3]}")
    _write_list(sets / "train_aug.txt", train_aug)
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
    :mod:`segproto.data.splits`), which compare image for image with U2PL's and PRCL's numbers.

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
        _write_list(out / f"train_labeled_{n}.txt", labelled)
        _write_list(out / f"train_unlabeled_{n}.txt", sorted(train_aug - set(labelled)))
        written += 2
    return written


#: ``name -> converter(src, dst) -> files written`` for ``python -m segproto.tools.convert``.
CONVERTERS: dict[str, Callable[[str | Path, str | Path], int]] = {
    "coco20i": convert_coco20i,
    "coco_stuff": convert_coco_stuff,
    "pascal_context": convert_pascal_context,
    "pascal_part108": convert_pascal_part108,
    "voc_aug": convert_voc_aug,
    "voc_splits": make_voc_splits,
}
