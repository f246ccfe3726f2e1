"""Mapillary Vistas v2.0 in its official layout, read directly (no conversion step).

Layout (as unpacked from the v2.0 download; ``{subset}`` is ``training``, ``validation`` or
``testing``, the latter without labels)::

    root/{subset}/images/<key>.jpg
    root/{subset}/v2.0/labels/<key>.png      8-bit index PNG (mode P), values = label ids 0..123

``<key>`` is the 22-character image key. The label PNGs hold the ids of the 124 v2.0 labels
(:data:`MAPILLARY_V2_LABELS`, the ``labels`` list of the official ``config_v2.0.json``, in
file order). They are read as they are: ``classes`` are all 124 labels, as in mmsegmentation's
``MapillaryDataset_v2`` and the hierarchical segmentation code of LogicSeg (whose Mapillary
loss predicts 124 + 17 + 7 outputs). The official benchmark evaluates 116 of them:
the 8 labels with ``evaluate: false`` (ambiguous barrier / marking / signage / traffic sign,
person / pole / vehicle group, unlabeled) are listed in :data:`MAPILLARY_V2_NOT_EVALUATED`.

The v2.0 label names encode the class hierarchy (``construction--flat--road``);
:func:`label_groups` derives the two coarser levels of ``builtin:mapillary_v2``
(``segproto/data/taxonomies/mapillary_v2.yaml``) from them.
"""

from __future__ import annotations

from typing import NamedTuple

from ..build import register_dataset
from .layout import layout_factory

__all__ = ["MapillaryLabel", "MAPILLARY_V2_LABELS", "MAPILLARY_V2_CLASSES", "MAPILLARY_V2_PALETTE",
           "MAPILLARY_V2_NOT_EVALUATED", "MAPILLARY_V2_LAYOUT", "label_groups"]


class MapillaryLabel(NamedTuple):
    """One entry of the v2.0 ``config_v2.0.json`` ``labels`` list (its index is the label id)."""

    name: str        # hierarchical name, e.g. "construction--flat--road"
    readable: str    # display name, e.g. "Road" (mmsegmentation's class name)
    evaluate: bool   # counted by the official benchmark
    color: tuple[int, int, int]


# The 124 labels of Mapillary Vistas v2.0 in id order: name, readable name, evaluate, colour, as in
# the official config_v2.0.json shipped with the dataset (written out from a public copy of it and
# checked against mmsegmentation's MapillaryDataset_v2 METAINFO: the same readable names and
# palette in the same order; 8 labels with evaluate false, the "8 void or crowd" of its docstring).
MAPILLARY_V2_LABELS: tuple[MapillaryLabel, ...] = tuple(MapillaryLabel(*row) for row in (
    ("animal--bird", "Bird", True, (165, 42, 42)),
    ("animal--ground-animal", "Ground Animal", True, (0, 192, 0)),
    ("construction--barrier--ambiguous", "Ambiguous Barrier", False, (250, 170, 31)),
    ("construction--barrier--concrete-block", "Concrete Block", True, (250, 170, 32)),
    ("construction--barrier--curb", "Curb", True, (196, 196, 196)),
    ("construction--barrier--fence", "Fence", True, (190, 153, 153)),
    ("construction--barrier--guard-rail", "Guard Rail", True, (180, 165, 180)),
    ("construction--barrier--other-barrier", "Barrier", True, (90, 120, 150)),
    ("construction--barrier--road-median", "Road Median", True, (250, 170, 33)),
    ("construction--barrier--road-side", "Road Side", True, (250, 170, 34)),
    ("construction--barrier--separator", "Lane Separator", True, (128, 128, 128)),
    ("construction--barrier--temporary", "Temporary Barrier", True, (250, 170, 35)),
    ("construction--barrier--wall", "Wall", True, (102, 102, 156)),
    ("construction--flat--bike-lane", "Bike Lane", True, (128, 64, 255)),
    ("construction--flat--crosswalk-plain", "Crosswalk - Plain", True, (140, 140, 200)),
    ("construction--flat--curb-cut", "Curb Cut", True, (170, 170, 170)),
    ("construction--flat--driveway", "Driveway", True, (250, 170, 36)),
    ("construction--flat--parking", "Parking", True, (250, 170, 160)),
    ("construction--flat--parking-aisle", "Parking Aisle", True, (250, 170, 37)),
    ("construction--flat--pedestrian-area", "Pedestrian Area", True, (96, 96, 96)),
    ("construction--flat--rail-track", "Rail Track", True, (230, 150, 140)),
    ("construction--flat--road", "Road", True, (128, 64, 128)),
    ("construction--flat--road-shoulder", "Road Shoulder", True, (110, 110, 110)),
    ("construction--flat--service-lane", "Service Lane", True, (110, 110, 110)),
    ("construction--flat--sidewalk", "Sidewalk", True, (244, 35, 232)),
    ("construction--flat--traffic-island", "Traffic Island", True, (128, 196, 128)),
    ("construction--structure--bridge", "Bridge", True, (150, 100, 100)),
    ("construction--structure--building", "Building", True, (70, 70, 70)),
    ("construction--structure--garage", "Garage", True, (150, 150, 150)),
    ("construction--structure--tunnel", "Tunnel", True, (150, 120, 90)),
    ("human--person--individual", "Person", True, (220, 20, 60)),
    ("human--person--person-group", "Person Group", False, (220, 20, 60)),
    ("human--rider--bicyclist", "Bicyclist", True, (255, 0, 0)),
    ("human--rider--motorcyclist", "Motorcyclist", True, (255, 0, 100)),
    ("human--rider--other-rider", "Other Rider", True, (255, 0, 200)),
    ("marking--continuous--dashed", "Lane Marking - Dashed Line", True, (255, 255, 255)),
    ("marking--continuous--solid", "Lane Marking - Straight Line", True, (255, 255, 255)),
    ("marking--continuous--zigzag", "Lane Marking - Zigzag Line", True, (250, 170, 29)),
    ("marking--discrete--ambiguous", "Lane Marking - Ambiguous", False, (250, 170, 28)),
    ("marking--discrete--arrow--left", "Lane Marking - Arrow (Left)", True, (250, 170, 26)),
    ("marking--discrete--arrow--other", "Lane Marking - Arrow (Other)", True, (250, 170, 25)),
    ("marking--discrete--arrow--right", "Lane Marking - Arrow (Right)", True, (250, 170, 24)),
    ("marking--discrete--arrow--split-left-or-straight", "Lane Marking - Arrow (Split Left or Straight)", True,
     (250, 170, 22)),
    ("marking--discrete--arrow--split-right-or-straight", "Lane Marking - Arrow (Split Right or Straight)", True,
     (250, 170, 21)),
    ("marking--discrete--arrow--straight", "Lane Marking - Arrow (Straight)", True, (250, 170, 20)),
    ("marking--discrete--crosswalk-zebra", "Lane Marking - Crosswalk", True, (255, 255, 255)),
    ("marking--discrete--give-way-row", "Lane Marking - Give Way (Row)", True, (250, 170, 19)),
    ("marking--discrete--give-way-single", "Lane Marking - Give Way (Single)", True, (250, 170, 18)),
    ("marking--discrete--hatched--chevron", "Lane Marking - Hatched (Chevron)", True, (250, 170, 12)),
    ("marking--discrete--hatched--diagonal", "Lane Marking - Hatched (Diagonal)", True, (250, 170, 11)),
    ("marking--discrete--other-marking", "Lane Marking - Other", True, (255, 255, 255)),
    ("marking--discrete--stop-line", "Lane Marking - Stop Line", True, (255, 255, 255)),
    ("marking--discrete--symbol--bicycle", "Lane Marking - Symbol (Bicycle)", True, (250, 170, 16)),
    ("marking--discrete--symbol--other", "Lane Marking - Symbol (Other)", True, (250, 170, 15)),
    ("marking--discrete--text", "Lane Marking - Text", True, (250, 170, 15)),
    ("marking-only--continuous--dashed", "Lane Marking (only) - Dashed Line", True, (255, 255, 255)),
    ("marking-only--discrete--crosswalk-zebra", "Lane Marking (only) - Crosswalk", True, (255, 255, 255)),
    ("marking-only--discrete--other-marking", "Lane Marking (only) - Other", True, (255, 255, 255)),
    ("marking-only--discrete--text", "Lane Marking (only) - Test", True, (255, 255, 255)),
    ("nature--mountain", "Mountain", True, (64, 170, 64)),
    ("nature--sand", "Sand", True, (230, 160, 50)),
    ("nature--sky", "Sky", True, (70, 130, 180)),
    ("nature--snow", "Snow", True, (190, 255, 255)),
    ("nature--terrain", "Terrain", True, (152, 251, 152)),
    ("nature--vegetation", "Vegetation", True, (107, 142, 35)),
    ("nature--water", "Water", True, (0, 170, 30)),
    ("object--banner", "Banner", True, (255, 255, 128)),
    ("object--bench", "Bench", True, (250, 0, 30)),
    ("object--bike-rack", "Bike Rack", True, (100, 140, 180)),
    ("object--catch-basin", "Catch Basin", True, (220, 128, 128)),
    ("object--cctv-camera", "CCTV Camera", True, (222, 40, 40)),
    ("object--fire-hydrant", "Fire Hydrant", True, (100, 170, 30)),
    ("object--junction-box", "Junction Box", True, (40, 40, 40)),
    ("object--mailbox", "Mailbox", True, (33, 33, 33)),
    ("object--manhole", "Manhole", True, (100, 128, 160)),
    ("object--parking-meter", "Parking Meter", True, (20, 20, 255)),
    ("object--phone-booth", "Phone Booth", True, (142, 0, 0)),
    ("object--pothole", "Pothole", True, (70, 100, 150)),
    ("object--sign--advertisement", "Signage - Advertisement", True, (250, 171, 30)),
    ("object--sign--ambiguous", "Signage - Ambiguous", False, (250, 172, 30)),
    ("object--sign--back", "Signage - Back", True, (250, 173, 30)),
    ("object--sign--information", "Signage - Information", True, (250, 174, 30)),
    ("object--sign--other", "Signage - Other", True, (250, 175, 30)),
    ("object--sign--store", "Signage - Store", True, (250, 176, 30)),
    ("object--street-light", "Street Light", True, (210, 170, 100)),
    ("object--support--pole", "Pole", True, (153, 153, 153)),
    ("object--support--pole-group", "Pole Group", False, (153, 153, 153)),
    ("object--support--traffic-sign-frame", "Traffic Sign Frame", True, (128, 128, 128)),
    ("object--support--utility-pole", "Utility Pole", True, (0, 0, 80)),
    ("object--traffic-cone", "Traffic Cone", True, (210, 60, 60)),
    ("object--traffic-light--general-single", "Traffic Light - General (Single)", True, (250, 170, 30)),
    ("object--traffic-light--pedestrians", "Traffic Light - Pedestrians", True, (250, 170, 30)),
    ("object--traffic-light--general-upright", "Traffic Light - General (Upright)", True, (250, 170, 30)),
    ("object--traffic-light--general-horizontal", "Traffic Light - General (Horizontal)", True, (250, 170, 30)),
    ("object--traffic-light--cyclists", "Traffic Light - Cyclists", True, (250, 170, 30)),
    ("object--traffic-light--other", "Traffic Light - Other", True, (250, 170, 30)),
    ("object--traffic-sign--ambiguous", "Traffic Sign - Ambiguous", False, (192, 192, 192)),
    ("object--traffic-sign--back", "Traffic Sign (Back)", True, (192, 192, 192)),
    ("object--traffic-sign--direction-back", "Traffic Sign - Direction (Back)", True, (192, 192, 192)),
    ("object--traffic-sign--direction-front", "Traffic Sign - Direction (Front)", True, (220, 220, 0)),
    ("object--traffic-sign--front", "Traffic Sign (Front)", True, (220, 220, 0)),
    ("object--traffic-sign--information-parking", "Traffic Sign - Parking", True, (0, 0, 196)),
    ("object--traffic-sign--temporary-back", "Traffic Sign - Temporary (Back)", True, (192, 192, 192)),
    ("object--traffic-sign--temporary-front", "Traffic Sign - Temporary (Front)", True, (220, 220, 0)),
    ("object--trash-can", "Trash Can", True, (140, 140, 20)),
    ("object--vehicle--bicycle", "Bicycle", True, (119, 11, 32)),
    ("object--vehicle--boat", "Boat", True, (150, 0, 255)),
    ("object--vehicle--bus", "Bus", True, (0, 60, 100)),
    ("object--vehicle--car", "Car", True, (0, 0, 142)),
    ("object--vehicle--caravan", "Caravan", True, (0, 0, 90)),
    ("object--vehicle--motorcycle", "Motorcycle", True, (0, 0, 230)),
    ("object--vehicle--on-rails", "On Rails", True, (0, 80, 100)),
    ("object--vehicle--other-vehicle", "Other Vehicle", True, (128, 64, 64)),
    ("object--vehicle--trailer", "Trailer", True, (0, 0, 110)),
    ("object--vehicle--truck", "Truck", True, (0, 0, 70)),
    ("object--vehicle--vehicle-group", "Vehicle Group", False, (0, 0, 142)),
    ("object--vehicle--wheeled-slow", "Wheeled Slow", True, (0, 0, 192)),
    ("object--water-valve", "Water Valve", True, (170, 170, 170)),
    ("void--car-mount", "Car Mount", True, (32, 32, 32)),
    ("void--dynamic", "Dynamic", True, (111, 74, 0)),
    ("void--ego-vehicle", "Ego Vehicle", True, (120, 10, 10)),
    ("void--ground", "Ground", True, (81, 0, 81)),
    ("void--static", "Static", True, (111, 111, 0)),
    ("void--unlabeled", "Unlabeled", False, (0, 0, 0)),
))

#: The 124 label names (``construction--flat--road``...) in id order: the dataset's classes.
MAPILLARY_V2_CLASSES: list[str] = [lb.name for lb in MAPILLARY_V2_LABELS]
#: Their official colours (``[124][3]`` RGB).
MAPILLARY_V2_PALETTE: list[list[int]] = [list(lb.color) for lb in MAPILLARY_V2_LABELS]
#: Ids of the 8 labels the official benchmark does not evaluate.
MAPILLARY_V2_NOT_EVALUATED: list[int] = [i for i, lb in enumerate(MAPILLARY_V2_LABELS) if not lb.evaluate]

MAPILLARY_V2_LAYOUT = ("root/{training,validation}/images/<key>.jpg and "
                       "root/{training,validation}/v2.0/labels/<key>.png (8-bit label ids 0..123)")
_LABEL_HINT = ("the v2.0 label PNGs hold ids 0..123: read <training|validation>/v2.0/labels, not "
               "v2.0/instances (16-bit, id * 256 + instance) nor the RGB v2.0/panoptic images")


def label_groups(name: str) -> tuple[str, str]:
    """(middle, top) group of a v2.0 label, read off its hierarchical name.

    The name is ``top--...``; the middle group is the second component of a name with three or
    more components (``construction--flat--road`` -> ``flat``; ``object--traffic-sign--front``
    -> ``traffic-sign``), prefixed with ``marking-`` under ``marking``
    (``marking--discrete--text`` -> ``marking-discrete``); every ``marking-only--*`` label is in
    ``marking-only``; a two-component name is in its top group (``nature--sky`` -> ``nature``,
    ``object--bench`` -> ``object``). The top group is the first component, with
    ``marking-only`` under ``marking``. This gives 16 groups + ``void`` under 6 + ``void``.
    """
    parts = name.split("--")
    top = parts[0]
    if top == "marking-only":
        return "marking-only", "marking"
    if len(parts) < 3:
        return top, top
    return (f"marking-{parts[1]}" if top == "marking" else parts[1]), top


register_dataset(
    "mapillary_v2", factory=layout_factory("Mapillary Vistas v2.0", MAPILLARY_V2_LAYOUT, _LABEL_HINT,
                                           {"train": "training", "val": "validation", "test": "testing"}),
    summary="Mapillary Vistas v2.0, official layout (124 label ids)",
    defaults={"img_dir": "{subset}/images", "ann_dir": "{subset}/v2.0/labels", "split_file": None,
              "img_suffix": ".jpg", "seg_map_suffix": ".png", "reduce_zero_label": False,
              "classes": MAPILLARY_V2_CLASSES, "palette": MAPILLARY_V2_PALETTE})
