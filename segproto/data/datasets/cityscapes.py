"""Cityscapes in its official layout, read directly (no conversion step).

Layout (``{subset}`` is ``train``, ``val`` or ``test``)::

    root/leftImg8bit/{subset}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/{subset}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The label PNGs hold the official label ids 0..33; they are mapped to the 19 evaluated
trainIds (0..18, everything else ``ignore_index``) when loaded, through a 256-entry lookup
table built from :data:`CITYSCAPES_LABELS` (the published Cityscapes label table). PNGs
already converted to trainIds (``*_gtFine_labelTrainIds.png``, e.g. by cityscapesscripts'
``createTrainIdLabelImgs``) are read as they are. Which of the two a dataset holds is
decided by ``seg_map_suffix`` alone (:func:`label_format`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from segproto.labels import bad_label_mask

from ..pipeline.dataset import DatasetError, Transform, _PairedDataset, _resolve, read_split

__all__ = ["CityscapesLabel", "CITYSCAPES_LABELS", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE",
           "CITYSCAPES_CATEGORIES", "LABEL_IDS_SUFFIX", "TRAIN_IDS_SUFFIX", "IMG_SUFFIX",
           "MAX_LABEL_ID", "id_to_train_id_lut", "label_format", "CityscapesDataset"]


class CityscapesLabel(NamedTuple):
    """One row of the Cityscapes label table."""

    name: str
    id: int          # value in *_gtFine_labelIds.png (-1: never written to label files)
    train_id: int    # 0..18 evaluated, 255 not evaluated (-1 for license plate)
    category: str
    color: tuple[int, int, int]


# The Cityscapes label table (cityscapesscripts/helpers/labels.py): name, id, trainId,
# category, colour. Written out here so no extra package is needed at run time.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(CityscapesLabel(*row) for row in (
    ("unlabeled", 0, 255, "void", (0, 0, 0)),
    ("ego vehicle", 1, 255, "void", (0, 0, 0)),
    ("rectification border", 2, 255, "void", (0, 0, 0)),
    ("out of roi", 3, 255, "void", (0, 0, 0)),
    ("static", 4, 255, "void", (0, 0, 0)),
    ("dynamic", 5, 255, "void", (111, 74, 0)),
    ("ground", 6, 255, "void", (81, 0, 81)),
    ("road", 7, 0, "flat", (128, 64, 128)),
    ("sidewalk", 8, 1, "flat", (244, 35, 232)),
    ("parking", 9, 255, "flat", (250, 170, 160)),
    ("rail track", 10, 255, "flat", (230, 150, 140)),
    ("building", 11, 2, "construction", (70, 70, 70)),
    ("wall", 12, 3, "construction", (102, 102, 156)),
    ("fence", 13, 4, "construction", (190, 153, 153)),
    ("guard rail", 14, 255, "construction", (180, 165, 180)),
    ("bridge", 15, 255, "construction", (150, 100, 100)),
    ("tunnel", 16, 255, "construction", (150, 120, 90)),
    ("pole", 17, 5, "object", (153, 153, 153)),
    ("polegroup", 18, 255, "object", (153, 153, 153)),
    ("traffic light", 19, 6, "object", (250, 170, 30)),
    ("traffic sign", 20, 7, "object", (220, 220, 0)),
    ("vegetation", 21, 8, "nature", (107, 142, 35)),
    ("terrain", 22, 9, "nature", (152, 251, 152)),
    ("sky", 23, 10, "sky", (70, 130, 180)),
    ("person", 24, 11, "human", (220, 20, 60)),
    ("rider", 25, 12, "human", (255, 0, 0)),
    ("car", 26, 13, "vehicle", (0, 0, 142)),
    ("truck", 27, 14, "vehicle", (0, 0, 70)),
    ("bus", 28, 15, "vehicle", (0, 60, 100)),
    ("caravan", 29, 255, "vehicle", (0, 0, 90)),
    ("trailer", 30, 255, "vehicle", (0, 0, 110)),
    ("train", 31, 16, "vehicle", (0, 80, 100)),
    ("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    ("bicycle", 33, 18, "vehicle", (119, 11, 32)),
    ("license plate", -1, -1, "vehicle", (0, 0, 142)),
))

_EVALUATED = sorted((lb for lb in CITYSCAPES_LABELS if 0 <= lb.train_id < 255),
                    key=lambda lb: lb.train_id)
#: The 19 evaluated classes in trainId order.
CITYSCAPES_CLASSES: list[str] = [lb.name for lb in _EVALUATED]
#: Their official colours (``[19][3]`` RGB).
CITYSCAPES_PALETTE: list[list[int]] = [list(lb.color) for lb in _EVALUATED]
#: The official category of each of the 19 classes (trainId order).
CITYSCAPES_CATEGORIES: list[str] = [lb.category for lb in _EVALUATED]
#: The largest id written to ``*_gtFine_labelIds.png``.
MAX_LABEL_ID = max(lb.id for lb in CITYSCAPES_LABELS)

IMG_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
_FORMATS = {LABEL_IDS_SUFFIX: "label_ids", TRAIN_IDS_SUFFIX: "train_ids"}

LAYOUT = ("root/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png and "
          "root/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png")


def id_to_train_id_lut(ignore_index: int = 255) -> np.ndarray:
    """256-entry lookup table: label id (0..33) -> trainId (0..18) or ``ignore_index``.

    Entries past :data:`MAX_LABEL_ID` are not valid ids; they also hold ``ignore_index``
    (:class:`CityscapesDataset` rejects such values before looking them up).
    """
    dtype = np.uint8 if 0 <= ignore_index <= 255 else np.int32
    lut = np.full(256, ignore_index, dtype=dtype)
    for lb in CITYSCAPES_LABELS:
        if lb.id >= 0 and 0 <= lb.train_id < 255:
            lut[lb.id] = lb.train_id
    return lut


def label_format(seg_map_suffix: str) -> str:
    """``"label_ids"`` for ``_gtFine_labelIds.png`` (remapped when loaded), ``"train_ids"`` for
    ``_gtFine_labelTrainIds.png`` (read as is); anything else raises ``ValueError``."""
    if seg_map_suffix not in _FORMATS:
        raise ValueError(f"data config: 'seg_map_suffix' is {seg_map_suffix!r}; the 'cityscapes' dataset "
                         f"accepts '{LABEL_IDS_SUFFIX}' (official label ids 0..33, mapped to the 19 "
                         f"trainIds when loaded) or '{TRAIN_IDS_SUFFIX}' (trainIds, read as they are)")
    return _FORMATS[seg_map_suffix]


def _city_name(name: str) -> str:
    """``<city>_<seq>_<frame>`` -> ``<city>/<city>_<seq>_<frame>``; other names unchanged."""
    if "/" in name:
        return name
    parts = name.rsplit("_", 2)
    return f"{parts[0]}/{name}" if len(parts) == 3 else name


class CityscapesDataset(_PairedDataset):
    """Cityscapes in the official folder layout, with labels as 19 trainIds.

    Args:
        root: Cityscapes root (holding ``leftImg8bit`` and ``gtFine``).
        img_dir: Image folder of one subset, relative to ``root`` or absolute.
        ann_dir: Label folder of the subset, or None for an unlabelled set.
        split: Split file of names ``<city>/<city>_<seq>_<frame>`` (a bare
            ``<city>_<seq>_<frame>`` is read under its city folder), relative to ``root``
            or absolute; None: every ``*<img_suffix>`` image in the city folders of
            ``img_dir``, sorted.
        img_suffix: Image file ending after the name.
        seg_map_suffix: ``_gtFine_labelIds.png`` (mapped to trainIds) or
            ``_gtFine_labelTrainIds.png`` (as is), see :func:`label_format`.
        classes: Must be the 19 Cityscapes classes in trainId order (the default).
        palette: Colours; default the official ones.
        ignore_index: Value of every pixel that is not one of the 19 classes.
        reduce_zero_label: Must be False (the id -> trainId mapping handles void).
        transform: As in :class:`SegDataset`.

    Raises:
        FileNotFoundError: Root, image or label folder, split file, an image, or the label
            of an image missing (messages name the expected layout or both paths).
        ValueError: Bad ``seg_map_suffix``, ``classes``, ``ignore_index`` or
            ``reduce_zero_label``.
    """

    def __init__(self, root: str | Path, img_dir: str | Path = "leftImg8bit/train",
                 ann_dir: str | Path | None = "gtFine/train", split: str | Path | None = None, *,
                 img_suffix: str = IMG_SUFFIX, seg_map_suffix: str = LABEL_IDS_SUFFIX,
                 classes: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None, ignore_index: int = 255,
                 reduce_zero_label: bool = False, transform: Transform | None = None) -> None:
        self.label_format = label_format(seg_map_suffix) if ann_dir is not None else None
        if classes is not None and list(classes) != CITYSCAPES_CLASSES:
            raise ValueError(f"data config: 'classes' of a 'cityscapes' dataset must be the 19 trainId "
                             f"classes in order {CITYSCAPES_CLASSES}, got {list(classes)}")
        if reduce_zero_label:
            raise ValueError("data config: 'reduce_zero_label' must be false for the 'cityscapes' "
                             "dataset (label ids are mapped to trainIds; void becomes ignore_index)")
        if 0 <= ignore_index < len(CITYSCAPES_CLASSES):
            raise ValueError(f"data config: 'ignore_index' {ignore_index} is a Cityscapes trainId "
                             f"(0..{len(CITYSCAPES_CLASSES) - 1}); use 255")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"Cityscapes root not found: {self.root} (expected the official "
                                    f"layout {LAYOUT})")
        self.img_dir = _resolve(self.root, img_dir)
        self.ann_dir = None if ann_dir is None else _resolve(self.root, ann_dir)
        for what, folder in (("image", self.img_dir), ("label", self.ann_dir)):
            if folder is not None and not folder.is_dir():
                found = sorted(p.name for p in self.root.iterdir())[:10]
                raise FileNotFoundError(
                    f"Cityscapes {what} folder not found: {folder}; is {self.root} the Cityscapes "
                    f"root? Expected the official layout {LAYOUT} (the root holds {found})")
        if split is None:
            names = sorted(f"{p.parent.name}/{p.name[:-len(img_suffix)]}"
                           for p in self.img_dir.glob(f"*/*{img_suffix}"))
            if not names:
                raise FileNotFoundError(f"no '<city>/*{img_suffix}' images under {self.img_dir} "
                                        f"(expected the official layout {LAYOUT})")
            source = str(self.img_dir)
        else:
            self.split_file = _resolve(self.root, split)
            names = [_city_name(n) for n in read_split(self.split_file)]
            source = str(self.split_file)
        img_paths = [self.img_dir / f"{n}{img_suffix}" for n in names]
        ann_paths = (None if self.ann_dir is None
                     else [self.ann_dir / f"{n}{seg_map_suffix}" for n in names])
        no_img = [p for p in img_paths if not p.is_file()]
        if no_img:
            raise FileNotFoundError(f"{source}: {len(no_img)} listed image(s) missing, e.g. "
                                    + ", ".join(str(p) for p in no_img[:5]))
        if ann_paths is not None:
            no_ann = [(i, a) for i, a in zip(img_paths, ann_paths) if not a.is_file()]
            if no_ann:
                shown = "; ".join(f"image {i} has no label {a}" for i, a in no_ann[:3])
                raise FileNotFoundError(
                    f"Cityscapes: {len(no_ann)} image(s) without a label file: {shown} "
                    f"(img_suffix={img_suffix!r}, seg_map_suffix={seg_map_suffix!r})")
        self.lut = id_to_train_id_lut(ignore_index)
        super().__init__(names, img_paths, ann_paths, classes=CITYSCAPES_CLASSES,
                         palette=CITYSCAPES_PALETTE if palette is None else palette,
                         ignore_index=ignore_index, reduce_zero_label=False,
                         transform=transform, source=source)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw checked sample ``i``: ``uint8 [H, W, 3]`` and trainId labels ``[H, W]`` (or None)."""
        img, gt = self.load_pair(i)
        if gt is None:
            return img, None
        path = self.ann_paths[i]
        if self.label_format == "label_ids":
            bad = bad_label_mask(gt, MAX_LABEL_ID + 1)
            if bad.any():
                vals = np.unique(gt[bad])
                raise DatasetError(
                    f"{path}: values {vals[:10].tolist()} are not Cityscapes label ids "
                    f"(0..{MAX_LABEL_ID}; {int(bad.sum())} pixels): unexpected label encoding. "
                    f"seg_map_suffix '{LABEL_IDS_SUFFIX}' reads the official label id PNGs, not "
                    "colour (_gtFine_color.png) or instance (_gtFine_instanceIds.png) images")
            return img, self.lut[gt]
        bad = bad_label_mask(gt, self.num_classes, self.ignore_index)
        if bad.any():
            vals = np.unique(gt[bad])
            raise DatasetError(f"{path}: label values {vals[:10].tolist()} are outside "
                               f"[0, {self.num_classes}) and not ignore_index="
                               f"{self.ignore_index} ({int(bad.sum())} pixels); if these are "
                               f"label ids (0..{MAX_LABEL_ID}), set seg_map_suffix: {LABEL_IDS_SUFFIX}")
        return img, gt
