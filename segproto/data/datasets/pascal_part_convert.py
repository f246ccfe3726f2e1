"""PASCAL-Part ``.mat`` annotations -> the 108-class label PNGs of the ``pascal_part108`` kind.

The raw annotations (Chen et al., CVPR 2014, "Detect What You Can": ``trainval.tar.gz`` of
http://www.stat.ucla.edu/~xianjie.chen/pascal_part_dataset/, unpacked to
``Annotations_Part/<name>.mat``) hold, per image, the VOC objects with their masks and their part
instances (``part_name`` as in the release's ``part2ind.m``: ``lwing``, ``engine_1``, ...).
:data:`PASCAL_PART108_MERGE` maps each object's raw part names to the 108 classes of
:data:`~segproto.data.datasets.pascal_part.PASCAL_PART108_CLASSES`. The table is **ours**, derived from the
part names: BSANet (Zhao et al., ICCV 2019) and LogicSeg publish the class list but no merge rules.
Left/right, front/back, upper/lower variants merge into the one class LogicSeg's list keeps
(its names keep one representative: ``cat rfleg`` = every cat leg).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from .convert_common import link_to, need_scipy, run_jobs, save_index_png
from ..pipeline.dataset import DatasetError, read_split
from .pascal_part import PASCAL_PART108_CLASSES

__all__ = ["PASCAL_PART108_MERGE", "convert_pascal_part108"]

_COW_LEGS = ("lfuleg", "lflleg", "rfuleg", "rflleg", "lbuleg", "lblleg", "rbuleg", "rblleg")

#: VOC object name -> {raw part base name (``part_name`` without ``_<digits>``) -> 108-class name,
#: or None = ignore (255)}. Objects with ``{}`` have no parts (silhouette only).
PASCAL_PART108_MERGE: dict[str, dict[str, str | None]] = {
    # aeroplane: no tail class (the stern carries it); both wings -> "rwing"; engine_<n>, wheel_<n>
    "aeroplane": {"body": "aero body", "stern": "aero stern", "tail": "aero stern", "lwing": "aero rwing",
                  "rwing": "aero rwing", "engine": "aero engine", "wheel": "aero wheel"},
    # bicycle: both wheels -> "fwheel"; headlight_<n> has no class (ignored)
    "bicycle": {"fwheel": "bike fwheel", "bwheel": "bike fwheel", "saddle": "bike saddle",
                "handlebar": "bike handlebar", "chainwheel": "bike chainwheel", "headlight": None},
    # bird: no eye class, the eyes are head; left/right wings, legs, feet merged
    "bird": {"head": "birds head", "leye": "birds head", "reye": "birds head", "beak": "birds beak",
             "torso": "birds torso", "neck": "birds neck", "lwing": "birds rwing", "rwing": "birds rwing",
             "lleg": "birds rleg", "rleg": "birds rleg", "lfoot": "birds rfoot", "rfoot": "birds rfoot",
             "tail": "birds tail"},
    # boat: silhouette only (the whole object is "boat")
    "boat": {},
    # bottle
    "bottle": {"cap": "bottle cap", "body": "bottle body"},
    # bus: the four sides -> "rightside"; both mirrors -> "mirror"; both plates -> "fliplate";
    # door_<n>, wheel_<n>, headlight_<n>, window_<n>
    "bus": {"frontside": "bus rightside", "leftside": "bus rightside", "rightside": "bus rightside",
            "backside": "bus rightside", "roofside": "bus roofside", "leftmirror": "bus mirror",
            "rightmirror": "bus mirror", "fliplate": "bus fliplate", "bliplate": "bus fliplate",
            "door": "bus door", "wheel": "bus wheel", "headlight": "bus headlight", "window": "bus window"},
    # car: as bus, but there is no car mirror class: the mirrors join the sides
    "car": {"frontside": "car rightside", "leftside": "car rightside", "rightside": "car rightside",
            "backside": "car rightside", "roofside": "car roofside", "leftmirror": "car rightside",
            "rightmirror": "car rightside", "fliplate": "car fliplate", "bliplate": "car fliplate",
            "door": "car door", "wheel": "car wheel", "headlight": "car headlight", "window": "car window"},
    # cat: eyes, ears, the four legs, the four paws merged (part2ind.m spells the paws lfpa, ...)
    "cat": {"head": "cat head", "leye": "cat reye", "reye": "cat reye", "lear": "cat rear", "rear": "cat rear",
            "nose": "cat nose", "torso": "cat torso", "neck": "cat neck", "lfleg": "cat rfleg",
            "rfleg": "cat rfleg", "lbleg": "cat rfleg", "rbleg": "cat rfleg", "lfpa": "cat rfpaw",
            "rfpa": "cat rfpaw", "lbpa": "cat rfpaw", "rbpa": "cat rfpaw",
            "tail": "cat tail"},
    # chair: silhouette only
    "chair": {},
    # cow: no eye class (eyes are head); ears, horns, the eight leg segments merged
    "cow": {"head": "cow head", "leye": "cow head", "reye": "cow head", "lear": "cow rear", "rear": "cow rear",
            "muzzle": "cow muzzle", "lhorn": "cow rhorn", "rhorn": "cow rhorn", "torso": "cow torso",
            "neck": "cow neck", **dict.fromkeys(_COW_LEGS, "cow rfuleg"), "tail": "cow tail"},
    # diningtable: silhouette only
    "diningtable": {},
    # dog: as cat, plus the muzzle
    "dog": {"head": "dog head", "leye": "dog reye", "reye": "dog reye", "lear": "dog rear", "rear": "dog rear",
            "nose": "dog nose", "torso": "dog torso", "neck": "dog neck", "lfleg": "dog rfleg",
            "rfleg": "dog rfleg", "lbleg": "dog rfleg", "rbleg": "dog rfleg", "lfpa": "dog rfpaw",
            "rfpa": "dog rfpaw", "lbpa": "dog rfpaw", "rbpa": "dog rfpaw",
            "tail": "dog tail",
            "muzzle": "dog muzzle"},
    # horse: as cow without horns, plus the four hooves (merged)
    "horse": {"head": "horse head", "leye": "horse head", "reye": "horse head", "lear": "horse rear",
              "rear": "horse rear", "muzzle": "horse muzzle", "torso": "horse torso", "neck": "horse neck",
              **dict.fromkeys(_COW_LEGS, "horse rfuleg"), "tail": "horse tail", "lfho": "horse rfho",
              "rfho": "horse rfho", "lbho": "horse rfho", "rbho": "horse rfho"},
    # motorbike: both wheels -> "fwheel"; headlight_<n>
    "motorbike": {"fwheel": "mbike fwheel", "bwheel": "mbike fwheel", "handlebar": "mbike hbar",
                  "saddle": "mbike saddle", "headlight": "mbike hlight"},
    # person: eyebrows are head; eyes, ears, the four arm segments, hands, the four leg segments, feet merged
    "person": {"head": "person head", "lebrow": "person head", "rebrow": "person head", "leye": "person reye",
               "reye": "person reye", "lear": "person rear", "rear": "person rear", "nose": "person nose",
               "mouth": "person mouth", "hair": "person hair", "torso": "person torso", "neck": "person neck",
               "luarm": "person ruarm", "ruarm": "person ruarm", "llarm": "person ruarm", "rlarm": "person ruarm",
               "lhand": "person rhand", "rhand": "person rhand", "luleg": "person ruleg", "ruleg": "person ruleg",
               "llleg": "person ruleg", "rlleg": "person ruleg", "lfoot": "person rfoot", "rfoot": "person rfoot"},
    # pottedplant
    "pottedplant": {"pot": "pplant pot", "plant": "pplant plant"},
    # sheep: as cow
    "sheep": {"head": "sheep head", "leye": "sheep head", "reye": "sheep head", "lear": "sheep rear",
              "rear": "sheep rear", "muzzle": "sheep muzzle", "lhorn": "sheep rhorn", "rhorn": "sheep rhorn",
              "torso": "sheep torso", "neck": "sheep neck", **dict.fromkeys(_COW_LEGS, "sheep rfuleg"),
              "tail": "sheep tail"},
    # sofa: silhouette only
    "sofa": {},
    # train: head sides and coach sides -> "rightside"; headlight_<n>, coach_<n>, c*side_<n>
    "train": {"head": "train head", "hfrontside": "train hrightside", "hleftside": "train hrightside",
              "hrightside": "train hrightside", "hbackside": "train hrightside", "hroofside": "train hroofside",
              "headlight": "train headlight", "coach": "train coach", "cfrontside": "train crightside",
              "cleftside": "train crightside", "crightside": "train crightside", "cbackside": "train crightside",
              "croofside": "train croofside"},
    # tvmonitor: the frame has no class (object rest = ignore)
    "tvmonitor": {"screen": "tv screen"},
}

# Class of the pixels of an object that no part covers: the class of the four part-less objects,
# ignore for every other object (a bicycle frame, a tv frame have no class among the 108).
_WHOLE = {"boat": "boat", "chair": "chair", "diningtable": "dining table", "sofa": "sofa"}
_ID = {name: i for i, name in enumerate(PASCAL_PART108_CLASSES)}
_PART_IDS = {obj: {raw: 255 if c is None else _ID[c] for raw, c in parts.items()}
             for obj, parts in PASCAL_PART108_MERGE.items()}
_REST_IDS = {obj: _ID[_WHOLE[obj]] if obj in _WHOLE else 255 for obj in PASCAL_PART108_MERGE}


def _structs(value) -> np.ndarray:  # a struct array, a single struct (squeezed) or an empty array
    return np.atleast_1d(np.asarray(value, dtype=object)).ravel()


def _mask(value, shape: tuple[int, int], mat: Path, what: str) -> np.ndarray:
    mask = np.asarray(value)
    if mask.shape != shape:
        raise DatasetError(f"{mat}: the mask of {what} has shape {mask.shape}, the image {shape}")
    return mask != 0


def _part108_label(mat: Path, shape: tuple[int, int]) -> np.ndarray:
    from scipy.io import loadmat

    try:
        objects = _structs(loadmat(mat, squeeze_me=True, struct_as_record=False)["anno"].objects)
    except (KeyError, AttributeError) as exc:
        raise DatasetError(f"{mat}: expected a PASCAL-Part Annotations_Part/*.mat file with anno.objects") from exc
    label = np.zeros(shape, np.uint8)
    for k, obj in enumerate(objects):  # file order: a later object paints over an earlier one
        cls = str(getattr(obj, "class"))
        if cls not in _PART_IDS:
            raise DatasetError(f"{mat}: object {k} has class '{cls}', not one of the 20 VOC classes "
                               f"{sorted(_PART_IDS)}")
        label[_mask(obj.mask, shape, mat, f"object {k} ({cls})")] = _REST_IDS[cls]
        for part in _structs(getattr(obj, "parts", [])):
            name = str(part.part_name)
            raw = re.sub(r"_\d+$", "", name)
            if raw not in _PART_IDS[cls]:
                raise DatasetError(f"{mat}: object {k} ({cls}) has part '{name}', not in the PASCAL-Part-108 "
                                   f"merge table of {cls} ({sorted(_PART_IDS[cls]) or 'no parts'})")
            label[_mask(part.mask, shape, mat, f"part '{name}' of object {k} ({cls})")] = _PART_IDS[cls][raw]
    bad = (label >= len(PASCAL_PART108_CLASSES)) & (label != 255)
    if bad.any():  # pragma: no cover - the merge table only holds valid ids
        raise DatasetError(f"{mat}: ids {np.unique(label[bad]).tolist()} are not PASCAL-Part-108 classes")
    return label


def _part108_one(job: tuple[Path, Path, Path, Path]) -> None:
    mat, jpg, png, link = job
    with Image.open(jpg) as im:
        w, h = im.size
    save_index_png(_part108_label(mat, (h, w)), png)
    link_to(link, jpg)


def convert_pascal_part108(src: str | Path, dst: str | Path, num_workers: int = 0) -> int:
    """PASCAL-Part ``Annotations_Part/*.mat`` -> the 108-class PNGs and image links of ``pascal_part108``.

    Each annotated image of VOC 2010's ``ImageSets/Main/{train,val}.txt`` is painted in the order
    of the file: 0 (background) everywhere, then per object its whole mask with the object's
    "rest" label (its class for boat, chair, dining table, sofa; 255 for the others, whose
    uncovered pixels, e.g. a bicycle frame, have no class), then each part mask with its class
    of :data:`PASCAL_PART108_MERGE` (255 where it maps to None). A later object paints over an
    earlier one. Annotated images in neither list are skipped; listed images without a ``.mat``
    are not converted.

    Args:
        src: A folder holding ``Annotations_Part/<name>.mat`` (the unpacked ``trainval.tar.gz``)
            and ``VOCdevkit/VOC2010`` (``JPEGImages/``, ``ImageSets/Main/{train,val}.txt``);
            ``src/../VOCdevkit/VOC2010`` is tried when ``src`` holds no VOCdevkit.
        dst: The ``pascal_part108`` root: writes ``ann108_dir/{train,val}/<name>.png`` (8-bit
            ids 0..107, 255 = ignore) and links ``img_dir/{train,val}/<name>.jpg`` to the
            JPEGs (read them with ``img_suffix: .jpg``).
        num_workers: Processes (0: in this process).

    Returns:
        The number of PNGs written.

    Raises:
        FileNotFoundError: No ``Annotations_Part`` folder, no VOC 2010 folder, a missing split
            list or JPEG (the message names the expected paths).
        DatasetError: An unknown object class or part name, or a mask whose shape is not the
            image's (names the ``.mat`` file, the object and the part).
        ImportError: scipy is not installed.
    """
    need_scipy("convert_pascal_part108")
    src, dst = Path(src), Path(dst)
    ann = src / "Annotations_Part"
    if not ann.is_dir():
        raise FileNotFoundError(f"PASCAL-Part: {ann} not found (expected the unpacked trainval.tar.gz: "
                                "Annotations_Part/<name>.mat)")
    tries = (src / "VOCdevkit" / "VOC2010", src.parent / "VOCdevkit" / "VOC2010")
    voc = next((t for t in tries if t.is_dir()), None)
    if voc is None:
        raise FileNotFoundError(f"PASCAL-Part: VOC 2010 not found: expected {tries[0]} or {tries[1]} "
                                "(JPEGImages/, ImageSets/Main/{train,val}.txt)")
    mats = {p.stem: p for p in ann.glob("*.mat")}
    written = 0
    for split in ("train", "val"):
        names = sorted({n.split()[0] for n in read_split(voc / "ImageSets" / "Main" / f"{split}.txt")} & set(mats))
        jobs = [(mats[n], voc / "JPEGImages" / f"{n}.jpg", dst / "ann108_dir" / split / f"{n}.png",
                 dst / "img_dir" / split / f"{n}.jpg") for n in names]
        missing = [str(j[1]) for j in jobs if not j[1].is_file()]
        if missing:
            raise FileNotFoundError(f"PASCAL-Part: {len(missing)} {split} image(s) not found, e.g. {missing[:3]}")
        written += run_jobs(_part108_one, jobs, num_workers)
    return written
