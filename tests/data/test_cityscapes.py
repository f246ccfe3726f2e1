"""Cityscapes in its official layout: the id -> trainId mapping, loading, splits, errors, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segproto.data import (CITYSCAPES_CLASSES, CITYSCAPES_LABELS, CITYSCAPES_PALETTE, CityscapesDataset,
                           DatasetError, build_dataset, id_to_train_id_lut, read_split)
from segproto.data.build import taxonomy_path
from segproto.data.taxonomy import Taxonomy

from .test_build import CITYSCAPES_CATEGORY

REPO = Path(__file__).resolve().parents[2]

# Rows of the published label table (cityscapesscripts/helpers/labels.py), written out by hand:
# label id -> trainId (255 = not evaluated). The void ids 0..6 are all 255.
HAND_TRAIN_ID = {0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255,
                 7: 0,     # road
                 8: 1,     # sidewalk
                 9: 255,   # parking
                 10: 255,  # rail track
                 11: 2,    # building
                 17: 5,    # pole
                 18: 255,  # polegroup
                 23: 10,   # sky
                 24: 11,   # person
                 26: 13,   # car
                 29: 255,  # caravan
                 30: 255,  # trailer
                 33: 18}   # bicycle
WRITTEN_IDS = np.array(sorted(HAND_TRAIN_ID), np.uint8)  # no license plate (-1 is never written)
H, W = 16, 32
TREE = {"train": {"aachen": ["000000_000019", "000001_000019", "000002_000019"],
                  "bochum": ["000000_001278", "000000_002293"]},
        "val": {"frankfurt": ["000000_000294", "000000_000576"]}}


def expected_train_ids(ids: np.ndarray) -> np.ndarray:
    return np.vectorize(HAND_TRAIN_ID.__getitem__, otypes=[np.int64])(ids)


def make_tree(root: Path, train_ids: bool = False) -> dict[str, np.ndarray]:
    """Writes a tiny tree in the official layout; returns ``{"<city>/<name>": label ids}``."""
    ids_of = {}
    for subset, cities in TREE.items():
        for city, frames in cities.items():
            for k, frame in enumerate(frames):
                name = f"{city}_{frame}"
                rng = np.random.default_rng(len(ids_of))
                img_dir, gt_dir = root / "leftImg8bit" / subset / city, root / "gtFine" / subset / city
                img_dir.mkdir(parents=True, exist_ok=True)
                gt_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB").save(
                    img_dir / f"{name}_leftImg8bit.png")
                ids = rng.choice(WRITTEN_IDS, (H, W))
                ids[0, :len(WRITTEN_IDS)] = WRITTEN_IDS  # every chosen id in every file
                Image.fromarray(ids, "L").save(gt_dir / f"{name}_gtFine_labelIds.png")
                if train_ids:
                    Image.fromarray(expected_train_ids(ids).astype(np.uint8), "L").save(
                        gt_dir / f"{name}_gtFine_labelTrainIds.png")
                ids_of[f"{city}/{name}"] = ids
    return ids_of


# --- the mapping --------------------------------------------------------------------------------

def test_lut_matches_hand_written_rows():
    lut = id_to_train_id_lut()
    assert lut.shape == (256,) and lut.dtype == np.uint8
    assert {i: int(lut[i]) for i in HAND_TRAIN_ID} == HAND_TRAIN_ID
    assert (lut[34:] == 255).all()  # not ids; the dataset rejects them before the lookup
    assert sorted(int(t) for t in lut if t != 255) == list(range(19))
    assert CITYSCAPES_CLASSES == list(CITYSCAPES_CATEGORY)  # trainId order, as in test_build
    assert id_to_train_id_lut(ignore_index=-1)[9] == -1


def test_table_matches_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    ours = [tuple(r) for r in CITYSCAPES_LABELS]
    theirs = [(lb.name, lb.id, lb.trainId, lb.category, tuple(lb.color)) for lb in labels.labels]
    assert ours == theirs
    lut = id_to_train_id_lut()
    for lb in labels.labels:
        if lb.id >= 0:
            assert lut[lb.id] == (lb.trainId if 0 <= lb.trainId < 19 else 255), lb.name
    assert [labels.trainId2label[t].name for t in range(19)] == CITYSCAPES_CLASSES


def test_table_agrees_with_the_builtin_taxonomy(tmp_path):
    tax = Taxonomy.from_yaml(taxonomy_path("builtin:cityscapes", tmp_path))
    assert tax.class_names(0) == CITYSCAPES_CLASSES
    assert [list(c) for c in tax.palette(0)] == CITYSCAPES_PALETTE
    up, cats = tax.parent_map(0, 1), tax.class_names(1)
    by_name = {lb.name: lb.category for lb in CITYSCAPES_LABELS}
    assert [cats[up[i]] for i in range(19)] == [by_name[n] for n in CITYSCAPES_CLASSES]


# --- loading ------------------------------------------------------------------------------------

def test_build_reads_label_ids_as_train_ids(tmp_path):
    ids_of = make_tree(tmp_path / "cs", train_ids=True)
    cfg = {"dataset": "cityscapes", "root": str(tmp_path / "cs"), "taxonomy": "builtin:cityscapes"}
    ds = build_dataset(cfg, "train", train=False)
    assert isinstance(ds, CityscapesDataset) and ds.label_format == "label_ids"
    assert ds.names == ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019",
                        "aachen/aachen_000002_000019", "bochum/bochum_000000_001278",
                        "bochum/bochum_000000_002293"]
    assert ds.classes == CITYSCAPES_CLASSES and ds.palette == [tuple(c) for c in CITYSCAPES_PALETTE]
    assert ds.taxonomy is not None and ds.taxonomy.num_classes(1) == 7
    for i, name in enumerate(ds.names):
        sample = ds[i]
        assert sample["img"].shape == (3, H, W) and sample["name"] == name
        assert sample["gt"].numpy().tolist() == expected_train_ids(ids_of[name]).tolist()
    val = build_dataset(cfg, "val", train=False)
    assert val.names == ["frankfurt/frankfurt_000000_000294", "frankfurt/frankfurt_000000_000576"]
    # the converted trainId PNGs are read as they are and give the same labels
    tr = build_dataset({**cfg, "seg_map_suffix": "_gtFine_labelTrainIds.png"}, "train", False)
    assert tr.label_format == "train_ids" and tr.names == ds.names
    assert all(np.array_equal(tr.load(i)[1], ds.load(i)[1]) for i in range(len(ds)))
    # no taxonomy: classes and palette from the table; a training crop
    plain = build_dataset({"dataset": "cityscapes", "root": str(tmp_path / "cs"), "crop_size": [8, 16]},
                          "train", train=True)
    assert plain.taxonomy is None and plain.num_classes == 19
    assert plain[(0, 3)]["gt"].shape == (8, 16)


def test_split_file_selects_names(tmp_path):
    root = tmp_path / "cs"
    ids_of = make_tree(root)
    (root / "splits").mkdir()
    # <city>/<name>, or a bare <name> read under its city folder
    (root / "splits/train_labeled_1-2.txt").write_text(
        "# labelled half\nbochum/bochum_000000_002293\naachen_000001_000019\n")
    cfg = {"dataset": "cityscapes", "root": str(root), "split_file": "splits/{split}.txt"}
    lab = build_dataset(cfg, "train_labeled_1-2", train=False)
    assert lab.names == ["bochum/bochum_000000_002293", "aachen/aachen_000001_000019"]
    assert lab.img_dir == root / "leftImg8bit/train"
    assert lab[1]["gt"].numpy().tolist() == expected_train_ids(ids_of[lab.names[1]]).tolist()
    # plain subset splits without a split file of their own: every image of the subset
    assert len(build_dataset(cfg, "val", train=False)) == 2
    with pytest.raises(FileNotFoundError, match="split file not found"):
        build_dataset(cfg, "train_labeled_1-4", train=False)
    assert read_split(root / "splits/train_labeled_1-2.txt")[0] == "bochum/bochum_000000_002293"


# --- errors -------------------------------------------------------------------------------------

def test_wrong_root_names_the_root_and_the_layout(tmp_path):
    make_tree(tmp_path / "cs")
    for wrong in (tmp_path, tmp_path / "cs/leftImg8bit"):  # the parent, a subfolder
        with pytest.raises(FileNotFoundError) as exc:
            build_dataset({"dataset": "cityscapes", "root": str(wrong)}, "train", False)
        msg = str(exc.value)
        assert f"is {wrong} the Cityscapes root?" in msg
        assert "root/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png" in msg
        assert "gtFine_labelIds.png" in msg
    with pytest.raises(FileNotFoundError, match="Cityscapes root not found"):
        build_dataset({"dataset": "cityscapes", "root": str(tmp_path / "nope")}, "train", False)


def test_image_without_label_names_both_paths(tmp_path):
    root = tmp_path / "cs"
    make_tree(root)
    gt = root / "gtFine/train/bochum/bochum_000000_001278_gtFine_labelIds.png"
    gt.unlink()
    img = root / "leftImg8bit/train/bochum/bochum_000000_001278_leftImg8bit.png"
    with pytest.raises(FileNotFoundError) as exc:
        build_dataset({"dataset": "cityscapes", "root": str(root)}, "train", False)
    assert f"image {img} has no label {gt}" in str(exc.value)


def test_unexpected_label_encoding_names_file_and_values(tmp_path):
    root = tmp_path / "cs"
    make_tree(root)
    bad = root / "gtFine/val/frankfurt/frankfurt_000000_000576_gtFine_labelIds.png"
    ids = np.full((H, W), 7, np.uint8)
    ids[:2, :3] = 142  # e.g. a colour channel value
    ids[5, 5] = 34
    Image.fromarray(ids, "L").save(bad)
    ds = build_dataset({"dataset": "cityscapes", "root": str(root)}, "val", False)
    ds[0]  # the other file is fine
    with pytest.raises(DatasetError) as exc:
        ds[1]
    msg = str(exc.value)
    assert str(bad) in msg and "[34, 142]" in msg and "not Cityscapes label ids (0..33; 7 pixels)" in msg
    assert "unexpected label encoding" in msg
    # the colour PNG given as labels (RGB) is refused by the label reader
    Image.fromarray(np.zeros((H, W, 3), np.uint8), "RGB").save(bad)
    with pytest.raises(DatasetError, match="single-channel"):
        ds[1]
    # label ids read as trainIds: the values are named, with the suffix to use
    Image.fromarray(ids, "L").save(str(bad).replace("labelIds", "labelTrainIds"))
    (root / "one.txt").write_text("frankfurt/frankfurt_000000_000576\n")
    tr = CityscapesDataset(root, "leftImg8bit/val", "gtFine/val", "one.txt",
                           seg_map_suffix="_gtFine_labelTrainIds.png")
    with pytest.raises(DatasetError, match=r"\[34, 142\] are outside \[0, 19\).*_gtFine_labelIds.png"):
        tr[0]


def test_bad_settings_are_refused(tmp_path):
    root = tmp_path / "cs"
    make_tree(root)
    cfg = {"dataset": "cityscapes", "root": str(root)}
    with pytest.raises(ValueError, match=r"'seg_map_suffix' is '_gtFine_color.png'.*"
                                         r"'_gtFine_labelIds.png'.*'_gtFine_labelTrainIds.png'"):
        build_dataset({**cfg, "seg_map_suffix": "_gtFine_color.png"}, "train", False)
    with pytest.raises(ValueError, match="'classes' of a 'cityscapes' dataset must be the 19"):
        build_dataset({**cfg, "classes": CITYSCAPES_CLASSES[::-1]}, "train", False)
    with pytest.raises(ValueError, match="reduce_zero_label"):
        build_dataset({**cfg, "reduce_zero_label": True}, "train", False)
    with pytest.raises(ValueError, match="'classes' .* differ from the finest level of taxonomy"):
        build_dataset({**cfg, "classes": ["a"] * 19, "taxonomy": "builtin:cityscapes"}, "train", False)


# --- configs ------------------------------------------------------------------------------------

def test_cityscapes_configs_load_and_build(tmp_path):
    from segproto.config import load_config
    from segproto.engine.builder import data_dict

    make_tree(tmp_path / "cs")
    base = load_config(REPO / "configs/_base_/cityscapes.yaml")
    assert (base.data.dataset, base.data.seg_map_suffix, base.data.taxonomy) == (
        "cityscapes", "_gtFine_labelIds.png", "builtin:cityscapes")
    assert base.data.classes == CITYSCAPES_CLASSES and base.data.palette == CITYSCAPES_PALETTE
    for name in ("pico/_cityscapes", "pico/cityscapes_hrnet48_40k", "pico/cityscapes_r101_deeplabv3_40k",
                 "hiposeg/cityscapes_r101_deeplabv3plus_80k"):
        cfg = load_config(REPO / f"configs/{name}.yaml")
        assert cfg.data.dataset == "cityscapes" and cfg.data.taxonomy == "builtin:cityscapes", name
    # the base config as the trainer reads it, pointed at the tiny tree
    d = {**data_dict(base), "root": str(tmp_path / "cs")}
    val = build_dataset(d, base.data.val_split, train=False)
    assert len(val) == 2 and val.taxonomy.num_classes(1) == 7 and val[0]["gt"].shape == (H, W)
