"""PASCAL-Part-108: 108 part classes (background included) of the 20 PASCAL VOC objects.

Layout (the one of the LogicSeg code, ``local_configs/_base_/datasets/pascal_part108.py`` and
``mmseg/datasets/pascal_part108.py`` of github.com/lingorX/LogicSeg, Li, Wang & Yang, ICCV 2023;
the HSSN authors' group)::

    root/img_dir/{train,val}/<name>.png        RGB images (the code reads ".png"; set
                                               img_suffix: .jpg for JPEG copies)
    root/ann108_dir/{train,val}/<name>.png     8-bit class ids 0..107, 255 = ignore

There is no official download of this layout: PASCAL-Part-108 is derived from the PASCAL-Part
annotations (Chen et al., CVPR 2014) on PASCAL VOC 2010 images by merging part instances into
108 classes (Zhao et al., "Multi-Class Part Parsing with Joint Boundary-Semantic Awareness",
ICCV 2019, BSANet). The class list and its order, the palette, and the object of each part are
those of the LogicSeg code (``PascalPart108.CLASSES`` / ``PALETTE``; the part -> object index
ranges of ``mmseg/models/losses/pascal_part.py``), written out here as data.
"""

from __future__ import annotations

from ..build import register_dataset
from .layout import layout_factory

__all__ = ["PASCAL_PART108_OBJECTS", "PASCAL_PART108_CLASSES", "PASCAL_PART108_PALETTE",
           "PASCAL_PART108_PARENT", "PASCAL_PART108_LAYOUT"]

# (object, its parts in class-id order). Object names are the PASCAL VOC class names (plus
# background); part names are LogicSeg's ("aero body", "cow rfuleg", ...: r = right, f = front,
# u = upper, ho = hoof, fliplate = front licence plate, hbar = handlebar, c = coach).
_OBJECT_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("background", ("background",)),
    ("aeroplane", ("aero body", "aero stern", "aero rwing", "aero engine", "aero wheel")),
    ("bicycle", ("bike fwheel", "bike saddle", "bike handlebar", "bike chainwheel")),
    ("bird", ("birds head", "birds beak", "birds torso", "birds neck", "birds rwing", "birds rleg",
              "birds rfoot", "birds tail")),
    ("boat", ("boat",)),
    ("bottle", ("bottle cap", "bottle body")),
    ("bus", ("bus rightside", "bus roofside", "bus mirror", "bus fliplate", "bus door", "bus wheel",
             "bus headlight", "bus window")),
    ("car", ("car rightside", "car roofside", "car fliplate", "car door", "car wheel", "car headlight",
             "car window")),
    ("cat", ("cat head", "cat reye", "cat rear", "cat nose", "cat torso", "cat neck", "cat rfleg",
             "cat rfpaw", "cat tail")),
    ("chair", ("chair",)),
    ("cow", ("cow head", "cow rear", "cow muzzle", "cow rhorn", "cow torso", "cow neck", "cow rfuleg",
             "cow tail")),
    ("diningtable", ("dining table",)),
    ("dog", ("dog head", "dog reye", "dog rear", "dog nose", "dog torso", "dog neck", "dog rfleg",
             "dog rfpaw", "dog tail", "dog muzzle")),
    ("horse", ("horse head", "horse rear", "horse muzzle", "horse torso", "horse neck", "horse rfuleg",
               "horse tail", "horse rfho")),
    ("motorbike", ("mbike fwheel", "mbike hbar", "mbike saddle", "mbike hlight")),
    ("person", ("person head", "person reye", "person rear", "person nose", "person mouth", "person hair",
                "person torso", "person neck", "person ruarm", "person rhand", "person ruleg",
                "person rfoot")),
    ("pottedplant", ("pplant pot", "pplant plant")),
    ("sheep", ("sheep head", "sheep rear", "sheep muzzle", "sheep rhorn", "sheep torso", "sheep neck",
               "sheep rfuleg", "sheep tail")),
    ("sofa", ("sofa",)),
    ("train", ("train head", "train hrightside", "train hroofside", "train headlight", "train coach",
               "train crightside", "train croofside")),
    ("tvmonitor", ("tv screen",)),
)

#: The 21 object-level classes: background + the 20 PASCAL VOC objects, in VOC order.
PASCAL_PART108_OBJECTS: list[str] = [obj for obj, _ in _OBJECT_PARTS]
#: The 108 part classes in label-id order.
PASCAL_PART108_CLASSES: list[str] = [part for _, parts in _OBJECT_PARTS for part in parts]
#: Object id (into :data:`PASCAL_PART108_OBJECTS`) of every part class.
PASCAL_PART108_PARENT: list[int] = [oi for oi, (_, parts) in enumerate(_OBJECT_PARTS) for _ in parts]
#: Colours of the 108 classes (LogicSeg's palette; a few parts share a colour).
PASCAL_PART108_PALETTE: list[list[int]] = [list(c) for c in (
    (0, 0, 0), (0, 192, 64), (0, 64, 96), (128, 192, 192),
    (0, 64, 64), (0, 192, 224), (0, 192, 192), (128, 192, 64),
    (0, 192, 96), (128, 192, 64), (128, 32, 192), (0, 0, 224),
    (0, 0, 64), (0, 160, 192), (128, 0, 96), (128, 0, 192),
    (0, 32, 192), (128, 128, 224), (0, 0, 192), (128, 160, 192),
    (128, 128, 0), (128, 0, 32), (128, 32, 0), (128, 0, 128),
    (64, 128, 32), (0, 160, 0), (0, 192, 64), (192, 128, 160),
    (0, 32, 0), (0, 128, 128), (64, 128, 160), (128, 160, 0),
    (0, 128, 0), (192, 128, 32), (128, 96, 128), (0, 0, 128),
    (64, 0, 32), (0, 224, 128), (128, 0, 0), (192, 0, 160),
    (0, 96, 128), (128, 128, 128), (64, 0, 160), (128, 224, 128),
    (128, 128, 64), (192, 0, 32), (128, 96, 0), (128, 0, 192),
    (0, 128, 32), (64, 224, 0), (0, 0, 64), (128, 128, 160),
    (64, 96, 0), (0, 128, 192), (0, 128, 160), (192, 224, 0),
    (0, 128, 64), (128, 128, 32), (192, 32, 128), (0, 64, 192),
    (0, 0, 32), (64, 160, 128), (128, 64, 64), (128, 0, 160),
    (64, 32, 128), (128, 192, 192), (0, 0, 160), (192, 160, 128),
    (128, 192, 0), (128, 0, 96), (192, 32, 0), (128, 64, 128),
    (64, 128, 96), (64, 160, 0), (0, 64, 0), (192, 128, 224),
    (64, 32, 0), (0, 192, 128), (64, 128, 224), (192, 160, 0),
    (0, 192, 0), (192, 128, 96), (192, 96, 128), (0, 64, 128),
    (64, 0, 96), (64, 224, 128), (128, 64, 0), (192, 0, 224),
    (64, 96, 128), (128, 192, 128), (64, 0, 224), (192, 224, 128),
    (128, 192, 64), (192, 0, 96), (192, 96, 0), (128, 64, 192),
    (0, 128, 96), (0, 224, 0), (64, 64, 64), (128, 128, 224),
    (0, 96, 0), (64, 192, 192), (0, 128, 224), (128, 224, 0),
    (64, 192, 64), (128, 128, 96), (128, 32, 128), (64, 0, 192),
)]

PASCAL_PART108_LAYOUT = ("root/img_dir/{train,val}/<name>.png and root/ann108_dir/{train,val}/<name>.png "
                         "(8-bit part ids 0..107, 255 = ignore)")
_LABEL_HINT = ("PASCAL-Part-108 labels hold part ids 0..107 and 255 (ignore): not colour-coded PNGs, "
               "nor the PASCAL-Part .mat annotations or another part set (e.g. the 58-part labels)")

register_dataset(
    "pascal_part108", factory=layout_factory("PASCAL-Part-108", PASCAL_PART108_LAYOUT, _LABEL_HINT),
    summary="PASCAL-Part-108 (108 parts of the 20 VOC objects), LogicSeg's mmseg layout",
    defaults={"img_dir": "img_dir/{subset}", "ann_dir": "ann108_dir/{subset}", "split_file": None,
              "img_suffix": ".png", "seg_map_suffix": ".png", "reduce_zero_label": False,
              "classes": PASCAL_PART108_CLASSES, "palette": PASCAL_PART108_PALETTE})
