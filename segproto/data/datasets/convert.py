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
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from .convert_common import checked_labels, link_to, run_jobs, save_index_png
from .convert_voc import VOC_SEMI_SIZES, convert_pascal_context, convert_voc_aug, make_voc_splits, pascal_context_lut
from ..pipeline.dataset import DatasetError, load_label
from .standard import COCO_IDS_ENCODING
from .pascal_part_convert import convert_pascal_part108

__all__ = ["CONVERTERS", "VOC_SEMI_SIZES", "convert_coco20i", "convert_coco_stuff", "convert_pascal_context", "convert_voc_aug",
           "make_voc_splits", "pascal_context_lut"]


# --- COCO-Stuff 164k ----------------------------------------------------------------------------

def _coco_one(src: Path, out_dir: Path) -> None:
    lut, valid = COCO_IDS_ENCODING.lut(255)
    raw = checked_labels(load_label(src), valid, src, COCO_IDS_ENCODING.description)
    save_index_png(lut[raw], out_dir / f"{src.name[:-len('.png')]}_labelTrainIds.png")


def convert_coco_stuff(src: str | Path, dst: str | Path, num_workers: int = 0) -> int:
    """Official COCO-Stuff id PNGs -> 171 contiguous train ids.

    The mapping is :func:`segproto.data.datasets.standard.coco_stuff_id_table`, derived from
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
        written += run_jobs(partial(_coco_one, out_dir=dst / "annotations" / subset), jobs, num_workers)
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
    save_index_png(label, out_dir / f"{stem}.png")


def convert_coco20i(src: str | Path, dst: str | Path, num_workers: int = 0) -> int:
    """COCO 2014 instance annotations -> the 81-label semantic masks COCO-20i is defined on.

    Every image of ``annotations/instances_<subset>2014.json`` gets ``DST/ann_dir/<subset>/<file
    stem>.png``: 0 = background, 1..80 = the COCO categories in increasing category-id order
    (:data:`segproto.data.pipeline.fewshot.COCO_CLASSES`; the ids of ``builtin:coco20i``). Each
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
    from ..pipeline.fewshot import COCO_CLASSES

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
        written += run_jobs(partial(_coco20i_one, out_dir=dst / "ann_dir" / subset), jobs, num_workers)
        img_src, img_dst = src / subset, dst / "img_dir" / subset
        if img_src.is_dir() and not (img_dst.is_dir() and not img_dst.is_symlink()):  # a real folder: the images
            link_to(img_dst, img_src, directory=True)
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
