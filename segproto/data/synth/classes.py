"""Class table and taxonomies of the built-in synthetic street-scene benchmark.

The fine ids below are the label values written to the annotation PNGs (255 = ignore).
Each fine class has a middle and a coarse parent; the two-level taxonomy is fine -> coarse,
the three-level one fine -> middle -> coarse.
"""

from __future__ import annotations

from ..pipeline.taxonomy import Level, Taxonomy

__all__ = ["FINE", "MIDDLE", "COARSE", "FINE_NAMES", "PALETTE", "NUM_FINE", "IGNORE_INDEX",
           "CLASS_ID", "build_taxonomy"]

IGNORE_INDEX = 255

COARSE: tuple[str, ...] = ("flat", "construction", "nature", "sky", "vehicle", "human",
                           "object")

# middle name -> coarse name
MIDDLE: dict[str, str] = {
    "drivable": "flat",
    "walkable": "flat",
    "building": "construction",
    "barrier": "construction",
    "greenery": "nature",
    "sky": "sky",
    "four-wheeler": "vehicle",
    "two-wheeler": "vehicle",
    "vehicle-part": "vehicle",
    "pedestrian": "human",
    "cyclist": "human",
    "pole": "object",
    "traffic-control": "object",
}

# (fine name, middle name, palette colour); the list index is the label id.
FINE: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("road", "drivable", (128, 64, 128)),
    ("sidewalk", "walkable", (244, 35, 232)),
    ("parking", "drivable", (250, 170, 160)),
    ("building", "building", (70, 70, 70)),
    ("wall", "barrier", (102, 102, 156)),
    ("fence", "barrier", (190, 153, 153)),
    ("vegetation", "greenery", (107, 142, 35)),
    ("terrain", "greenery", (152, 251, 152)),
    ("sky", "sky", (70, 130, 180)),
    ("car", "four-wheeler", (0, 0, 142)),
    ("truck", "four-wheeler", (0, 0, 70)),
    ("bus", "four-wheeler", (0, 60, 100)),
    ("bicycle", "two-wheeler", (119, 11, 32)),
    ("wheel", "vehicle-part", (255, 127, 14)),
    ("window", "vehicle-part", (23, 190, 207)),
    ("head", "pedestrian", (255, 187, 120)),
    ("torso", "pedestrian", (220, 20, 60)),
    ("legs", "pedestrian", (148, 103, 189)),
    ("rider", "cyclist", (255, 0, 0)),
    ("pole", "pole", (153, 153, 153)),
    ("traffic sign", "traffic-control", (220, 220, 0)),
    ("traffic light", "traffic-control", (250, 170, 30)),
)

FINE_NAMES: tuple[str, ...] = tuple(f[0] for f in FINE)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(f[2] for f in FINE)
NUM_FINE = len(FINE)
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(FINE_NAMES)}

_COARSE_COLORS = ((128, 64, 128), (70, 70, 70), (107, 142, 35), (70, 130, 180),
                  (0, 0, 142), (220, 20, 60), (153, 153, 153))


def build_taxonomy(num_levels: int = 2) -> Taxonomy:
    """Taxonomy of the synthetic benchmark.

    Args:
        num_levels: 2 (fine -> coarse: 22 -> 7) or 3 (fine -> middle -> coarse: 22 -> 13 -> 7).

    Returns:
        A :class:`Taxonomy`, finest level first.
    """
    middle_names = tuple(MIDDLE)
    coarse_of_middle = tuple(COARSE.index(MIDDLE[m]) for m in middle_names)
    middle_of_fine = tuple(middle_names.index(f[1]) for f in FINE)
    coarse_lv = Level("coarse", COARSE, None, _COARSE_COLORS)
    if num_levels == 2:
        fine_parents = tuple(coarse_of_middle[m] for m in middle_of_fine)
        return Taxonomy([Level("fine", FINE_NAMES, fine_parents, PALETTE), coarse_lv],
                        source="<synthetic 2-level>")
    if num_levels == 3:
        mid_colors = tuple(_COARSE_COLORS[c] for c in coarse_of_middle)
        return Taxonomy([Level("fine", FINE_NAMES, middle_of_fine, PALETTE),
                         Level("middle", middle_names, coarse_of_middle, mid_colors),
                         coarse_lv], source="<synthetic 3-level>")
    raise ValueError(f"num_levels must be 2 or 3, got {num_levels}")
