"""build_dataset: synthetic generation on demand, folder and file-list kinds, key errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from segproto.data import (EvalTransform, FileListDataset, SegDataset, TrainTransform,
                           build_dataset, read_split)

from .conftest import SMALL


def test_synthetic_reuses_existing_tree(synth_root):
    cfg = {"dataset": "synthetic", "root": str(synth_root), "synthetic": SMALL,
           "crop_size": [64, 96], "scale_range": [1.0, 1.0], "flip": False}
    train = build_dataset(cfg, "train", train=True)
    assert isinstance(train, SegDataset) and isinstance(train.transform, TrainTransform)
    assert len(train) == SMALL["num_train"] and train.num_classes == 22
    assert train.taxonomy is not None and train.taxonomy.num_classes(1) == 7
    assert train[(0, 5)]["img"].shape == (3, 64, 96)
    val = build_dataset(cfg, "val", train=False)
    assert isinstance(val.transform, EvalTransform) and val[0]["img"].shape == (3, 128, 128)
    lab = build_dataset(cfg, "train_labeled_1-8", train=False)
    assert lab.names == read_split(synth_root / "splits/train_labeled_1-8.txt")
    assert lab.img_dir == synth_root / "img_dir/train"
    want = np.asarray(Image.open(synth_root / f"ann_dir/train/{lab.names[0]}.png"))
    assert lab[0]["gt"].tolist() == want.tolist()


def test_synthetic_generates_when_missing_and_checks_keys(tmp_path):
    params = dict(num_train=4, num_val=2, num_test=1, image_size=48, seed=1)
    cfg = {"root": str(tmp_path / "gen"), "synthetic": params}  # dataset defaults to synthetic
    ds = build_dataset(cfg, "test", train=False)
    assert len(ds) == 1 and ds[0]["gt"].shape == (48, 48)
    with pytest.raises(KeyError, match="did you mean 'num_train'"):
        build_dataset({"root": str(tmp_path / "x"), "synthetic": {"num_trian": 3}}, "val",
                      False)
    with pytest.raises(FileExistsError, match="meta.json"):
        build_dataset({**cfg, "synthetic": {**params, "seed": 2}}, "val", False)
    with pytest.raises(KeyError, match="crop_size"):
        build_dataset(cfg, "train", train=True)
    # no 'synthetic' section: the existing tree is used as it is
    plain = build_dataset({"root": str(tmp_path / "gen")}, "train", False)
    assert len(plain) == 4 and plain[0]["img"].shape == (3, 48, 48)


def test_folder_and_filelist_kinds(synth_root, tmp_path):
    root = tmp_path / "real"
    shutil.copytree(synth_root / "img_dir/val", root / "images/val")
    shutil.copytree(synth_root / "ann_dir/val", root / "labels/val")
    classes = [f"c{i}" for i in range(22)]
    cfg = {"dataset": "folder", "root": str(root), "img_dir": "images/{subset}",
           "ann_dir": "labels/{subset}", "classes": classes}
    ds = build_dataset(cfg, "val", train=False)  # no split file: every image
    assert len(ds) == SMALL["num_val"] and ds.classes == classes and ds.taxonomy is None
    with pytest.raises(FileNotFoundError, match="split file not found"):
        build_dataset({**cfg, "split_file": "lists/{split}.txt"}, "val", False)
    shutil.copy(synth_root / "taxonomy.yaml", root / "tax.yaml")
    with_tax = build_dataset({**{k: v for k, v in cfg.items() if k != "classes"},
                              "taxonomy": "tax.yaml"}, "val", False)
    assert with_tax.classes[0] == "road" and with_tax.taxonomy.num_levels == 2
    with pytest.raises(KeyError, match="needs 'classes'"):
        build_dataset({k: v for k, v in cfg.items() if k != "classes"}, "val", False)
    (root / "val.txt").write_text("images/val/val_000003.png labels/val/val_000003.png\n")
    fl = build_dataset({"dataset": "filelist", "root": str(root), "list_file": "{split}.txt",
                        "classes": classes}, "val", False)
    assert isinstance(fl, FileListDataset) and len(fl) == 1
    assert torch.equal(fl[0]["gt"], ds[3]["gt"])
    with pytest.raises(ValueError, match="unknown dataset 'vocc' \\(did you mean 'voc'\\?\\)"):
        build_dataset({**cfg, "dataset": "vocc"}, "val", False)
    with pytest.raises(KeyError, match="'root'"):
        build_dataset({"dataset": "folder"}, "val", False)


# The published Cityscapes label table (cityscapesscripts/helpers/labels.py): trainId 0..18 and
# the category of each, written out by hand as the independent reference.
CITYSCAPES_CATEGORY = {
    "road": "flat", "sidewalk": "flat", "building": "construction", "wall": "construction",
    "fence": "construction", "pole": "object", "traffic light": "object", "traffic sign": "object",
    "vegetation": "nature", "terrain": "nature", "sky": "sky", "person": "human", "rider": "human",
    "car": "vehicle", "truck": "vehicle", "bus": "vehicle", "train": "vehicle", "motorcycle": "vehicle",
    "bicycle": "vehicle"}


def test_builtin_cityscapes_taxonomy_matches_the_official_categories(synth_root, tmp_path):
    from segproto.data.build import taxonomy_path
    from segproto.data.taxonomy import Taxonomy

    tax = Taxonomy.from_yaml(taxonomy_path("builtin:cityscapes", tmp_path))
    assert tax.class_names(0) == list(CITYSCAPES_CATEGORY)  # trainId order
    up = tax.parent_map(0, 1)
    assert {n: tax.class_names(1)[up[i]] for i, n in enumerate(tax.class_names(0))} == CITYSCAPES_CATEGORY
    assert tax.class_names(1) == ["flat", "construction", "object", "nature", "sky", "human", "vehicle"]
    with pytest.raises(FileNotFoundError, match="'builtin:mapillary' is not shipped.*cityscapes"):
        taxonomy_path("builtin:mapillary", tmp_path)
    # classes given beside a taxonomy must be its finest level
    root = tmp_path / "real"
    shutil.copytree(synth_root / "img_dir/val", root / "images/val")
    shutil.copytree(synth_root / "ann_dir/val", root / "labels/val")
    cfg = {"dataset": "folder", "root": str(root), "img_dir": "images/{subset}", "ann_dir": "labels/{subset}",
           "taxonomy": str(synth_root / "taxonomy.yaml")}
    assert build_dataset(cfg, "val", False).taxonomy.num_levels == 2  # absolute path
    with pytest.raises(ValueError, match="'classes' .* differ from the finest level of taxonomy"):
        build_dataset({**cfg, "classes": [f"c{i}" for i in range(22)]}, "val", False)
