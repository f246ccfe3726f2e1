"""Hierarchical datasets: Mapillary Vistas v2.0, PASCAL-Part-108, the shipped taxonomies
(mapillary_v2, pascal_part108, ade20k), the Cityscapes semi-supervised splits and the convert CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segproto.data import DATASET_KINDS, DatasetError, build_dataset
from segproto.data.build import taxonomy_path
from segproto.data.mapillary import (MAPILLARY_V2_CLASSES, MAPILLARY_V2_NOT_EVALUATED, MAPILLARY_V2_PALETTE,
                                     label_groups)
from segproto.data.pascal_part import PASCAL_PART108_CLASSES, PASCAL_PART108_OBJECTS
from segproto.data.splits import make_cityscapes_splits, nested_splits
from segproto.data.taxonomy import Taxonomy
from segproto.tools.convert import main as convert_main

from .test_cityscapes import H, W, expected_train_ids, make_tree

REPO = Path(__file__).resolve().parents[2]


def tax(name: str) -> Taxonomy:
    return Taxonomy.from_yaml(taxonomy_path(f"builtin:{name}", REPO))


def up(t: Taxonomy, name: str) -> list[str]:
    """The ancestors of a finest-level class, coarser and coarser (by name)."""
    i = t.class_names(0).index(name)
    return [t.class_names(lv)[t.parent_map(0, lv)[i]] for lv in range(1, t.num_levels)]


def save_png(arr: np.ndarray, path: Path, palette: bool = False) -> None:
    """An 8-bit label PNG: mode L, or mode P with the Mapillary palette (as the v2.0 labels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8))
    if palette:
        im.putpalette([v for c in MAPILLARY_V2_PALETTE for v in c])  # L -> P, indices kept
    im.save(path)


def rgb(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB").save(path)


# --- Mapillary Vistas v2.0 ----------------------------------------------------------------------

MVD = {"training": ["0035fkbjWljhaftpVM37-g", "00qclUcInksIYnm19b1Xfw"], "validation": ["03G8WHFnNfiJR-457i0MWQ"]}
MVD_IDS = np.array([0, 12, 21, 45, 61, 84, 108, 117, 122, 123], np.uint8)  # bird ... void--unlabeled


def make_mapillary(root: Path) -> dict[str, np.ndarray]:
    labels = {}
    for k, (subset, keys) in enumerate(MVD.items()):
        for j, key in enumerate(keys):
            rgb(root / subset / "images" / f"{key}.jpg", 10 * k + j)
            ids = np.random.default_rng(k + j).choice(MVD_IDS, (H, W)).astype(np.uint8)
            ids[0, :len(MVD_IDS)] = MVD_IDS
            save_png(ids, root / subset / "v2.0" / "labels" / f"{key}.png", palette=True)
            labels[key] = ids
    return labels


def test_mapillary_reads_label_ids_with_the_taxonomy(tmp_path):
    root = tmp_path / "mvd"
    labels = make_mapillary(root)
    assert Image.open(root / "training/v2.0/labels/0035fkbjWljhaftpVM37-g.png").mode == "P"
    cfg = {"dataset": "mapillary_v2", "root": str(root), "taxonomy": "builtin:mapillary_v2"}
    ds = build_dataset(cfg, "train", train=False)
    assert ds.names == sorted(MVD["training"]) and ds.num_classes == 124
    assert ds.classes[21] == "construction--flat--road" and ds.palette[21] == (128, 64, 128)
    for i, name in enumerate(ds.names):
        assert ds[i]["gt"].numpy().tolist() == labels[name].tolist()  # ids read as they are
    assert ds.taxonomy.level_names == ["fine", "middle", "top"]
    val = build_dataset(cfg, "val", train=False)
    assert val.names == MVD["validation"] and val.img_dir == root / "validation/images"
    coarse = val.taxonomy.map_labels(val.load(0)[1], 0, "top")
    top = val.taxonomy.class_names("top")
    assert top[coarse[0, 2]] == "construction" and top[coarse[0, 9]] == "void"  # road, unlabeled
    crop = build_dataset({**cfg, "crop_size": [8, 16]}, "train", train=True)[(0, 1)]
    assert crop["gt"].shape == (8, 16)


def test_mapillary_errors_name_the_path(tmp_path):
    root = tmp_path / "mvd"
    make_mapillary(root)
    with pytest.raises(FileNotFoundError) as exc:  # the parent folder given as root
        build_dataset({"dataset": "mapillary_v2", "root": str(tmp_path)}, "train", False)
    msg = str(exc.value)
    assert f"is {tmp_path} the Mapillary Vistas v2.0 root?" in msg and "training" in msg
    assert "root/{training,validation}/v2.0/labels/<key>.png" in msg
    with pytest.raises(FileNotFoundError, match="split file not found: .*train_labeled_1-8.txt"):
        build_dataset({"dataset": "mapillary_v2", "root": str(root), "split_file": "splits/{split}.txt"},
                      "train_labeled_1-8", False)
    # an instance PNG (16-bit, id * 256 + instance) where the label PNG belongs
    bad = root / "validation/v2.0/labels/03G8WHFnNfiJR-457i0MWQ.png"
    Image.fromarray(np.full((H, W), 21 * 256 + 3, np.uint16)).save(bad)
    ds = build_dataset({"dataset": "mapillary_v2", "root": str(root)}, "val", False)
    with pytest.raises(DatasetError) as exc:
        ds[0]
    msg = str(exc.value)
    assert str(bad) in msg and "[5379]" in msg and "unexpected label encoding" in msg and "v2.0/instances" in msg


def test_mapillary_table_and_taxonomy():
    t = tax("mapillary_v2")
    assert [t.num_classes(lv) for lv in range(3)] == [124, 17, 7]
    assert t.class_names(0) == MAPILLARY_V2_CLASSES == DATASET_KINDS["mapillary_v2"].defaults["classes"]
    assert [list(c) for c in t.palette(0)] == MAPILLARY_V2_PALETTE
    # the 8 labels with evaluate: false in config_v2.0.json, by hand
    assert MAPILLARY_V2_NOT_EVALUATED == [2, 31, 38, 79, 86, 96, 115, 123]
    hand = {"construction--flat--road": ["flat", "construction"],
            "construction--barrier--wall": ["barrier", "construction"],
            "human--rider--bicyclist": ["rider", "human"],
            "marking--discrete--arrow--left": ["marking-discrete", "marking"],
            "marking-only--discrete--text": ["marking-only", "marking"],
            "nature--sky": ["nature", "nature"],
            "object--street-light": ["object", "object"],
            "object--traffic-sign--front": ["traffic-sign", "object"],
            "object--vehicle--car": ["vehicle", "object"],
            "void--unlabeled": ["void", "void"]}
    for name, ancestors in hand.items():
        assert up(t, name) == ancestors, name
        assert list(label_groups(name)) == ancestors, name
    assert all(list(label_groups(n)) == up(t, n) for n in MAPILLARY_V2_CLASSES)  # the file is the rule


# --- PASCAL-Part-108 ----------------------------------------------------------------------------

def make_pascal_part(root: Path) -> dict[str, np.ndarray]:
    labels = {}
    for subset, names in (("train", ["2008_000002", "2008_000003"]), ("val", ["2008_000008"])):
        for j, name in enumerate(names):
            rgb(root / "img_dir" / subset / f"{name}.png", j)
            ids = np.random.default_rng(j).choice(np.array([0, 1, 18, 82, 107, 255], np.uint8), (H, W))
            save_png(ids, root / "ann108_dir" / subset / f"{name}.png")
            labels[name] = ids
    return labels


def test_pascal_part_reads_parts_with_the_taxonomy(tmp_path):
    root = tmp_path / "pp"
    labels = make_pascal_part(root)
    cfg = {"dataset": "pascal_part108", "root": str(root), "taxonomy": "builtin:pascal_part108"}
    ds = build_dataset(cfg, "train", train=False)
    assert ds.names == ["2008_000002", "2008_000003"] and ds.num_classes == 108
    gt = ds[1]["gt"].numpy()
    assert gt.tolist() == labels["2008_000003"].tolist()
    objects = ds.taxonomy.map_labels(gt, 0, 1)
    hand = {0: 0, 1: 1, 18: 4, 82: 15, 107: 20, 255: 255}  # background, aero body -> aeroplane, boat, person
    assert objects.tolist() == np.vectorize(hand.__getitem__)(gt).tolist()  # ... hair -> person, tv screen
    assert len(build_dataset(cfg, "val", False)) == 1
    bad = root / "ann108_dir/val/2008_000008.png"
    save_png(np.full((H, W), 108, np.uint8), bad)
    with pytest.raises(DatasetError) as exc:
        build_dataset(cfg, "val", False)[0]
    assert str(bad) in str(exc.value) and "[108]" in str(exc.value) and "part ids 0..107" in str(exc.value)
    with pytest.raises(FileNotFoundError,
                       match=r"PASCAL-Part-108 label folder not found: .*ann58_dir/train; .*ann108_dir"):
        build_dataset({**cfg, "ann_dir": "ann58_dir/{subset}"}, "train", False)


def test_pascal_part_taxonomy():
    t = tax("pascal_part108")
    assert [t.num_classes(lv) for lv in range(2)] == [108, 21] and t.level_names == ["part", "object"]
    assert t.class_names(0) == PASCAL_PART108_CLASSES == DATASET_KINDS["pascal_part108"].defaults["classes"]
    assert t.class_names(1) == PASCAL_PART108_OBJECTS
    assert PASCAL_PART108_CLASSES[:3] == ["background", "aero body", "aero stern"]
    for part, obj in {"background": "background", "bike chainwheel": "bicycle", "cow rhorn": "cow",
                      "dining table": "diningtable", "person hair": "person", "pplant pot": "pottedplant",
                      "train croofside": "train", "tv screen": "tvmonitor"}.items():
        assert up(t, part) == [obj], part
    sizes = np.bincount(t.parent_map(0, 1), minlength=21)  # parts per object, LogicSeg's ranges
    assert sizes.tolist() == [1, 5, 4, 8, 1, 2, 8, 7, 9, 1, 8, 1, 10, 8, 4, 12, 2, 8, 1, 7, 1]


def test_ade20k_taxonomy_matches_the_ade20k_kind():
    t = tax("ade20k")
    assert [t.num_classes(lv) for lv in range(3)] == [150, 14, 3]
    assert t.class_names(0) == DATASET_KINDS["ade20k"].defaults["classes"]  # what build_dataset compares
    assert t.class_names(0)[:8] == ["wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed"]
    for name, ancestors in {"wall": ["barrier", "construction"], "road": ["flat", "construction"],
                            "person": ["living things", "object"], "car": ["vehicle", "object"],
                            "bathtub": ["container", "object"], "sky": ["nature", "nature"],
                            "palm": ["plant", "nature"], "flag": ["sign", "object"]}.items():
        assert up(t, name) == ancestors, name


# --- Cityscapes semi-supervised splits ----------------------------------------------------------

def test_nested_splits_sizes_nesting_determinism():
    names = [f"city{i % 7}/city{i % 7}_{i:06d}_000019" for i in range(2975)]
    a, b = nested_splits(names, seed=0), nested_splits(names[::-1], seed=0)
    assert a == b  # order of the input does not matter
    assert {k: len(v[0]) for k, v in a.items()} == {16: 186, 8: 372, 4: 744, 2: 1488}
    for small, big in ((16, 8), (8, 4), (4, 2)):
        assert set(a[small][0]) < set(a[big][0])
    for lab, unl in a.values():
        assert not set(lab) & set(unl) and sorted(lab + unl) == sorted(names) and lab == sorted(lab)
    assert nested_splits(names, seed=1)[16][0] != a[16][0]


def test_make_cityscapes_splits_are_read_by_the_dataset_and_prcl_config(tmp_path):
    from segproto.config import load_config
    from segproto.engine.builder import data_dict

    root = tmp_path / "cs"
    make_tree(root)
    written = make_cityscapes_splits(root, seed=0)
    assert sorted(p.name for p in written) == sorted(f"train_{k}_1-{n}.txt" for k in ("labeled", "unlabeled")
                                                     for n in (16, 8, 4, 2))
    first = {p.name: p.read_bytes() for p in written}
    make_cityscapes_splits(root, seed=0)
    assert {p.name: p.read_bytes() for p in written} == first  # deterministic
    cfg = load_config(REPO / "configs/prcl/cityscapes_r101_1-16.yaml")
    assert (cfg.data.split_file, cfg.data.train_split, cfg.data.unlabeled_split) == (
        "splits/{split}.txt", "train_labeled_1-16", "train_unlabeled_1-16")
    d = {**data_dict(cfg), "root": str(root)}
    lab, unl = build_dataset(d, cfg.data.train_split, False), build_dataset(d, cfg.data.unlabeled_split, False)
    assert len(lab) == 1 and len(unl) == 4 and not set(lab.names) & set(unl.names)
    assert lab[0]["gt"].shape == (H, W)
    with pytest.raises(FileNotFoundError, match=r"is .*/nope the Cityscapes root\?"):
        make_cityscapes_splits(tmp_path / "nope")


# --- the convert CLI ----------------------------------------------------------------------------

def test_cli_converts_cityscapes_like_the_lut(tmp_path, capsys):
    from segproto.data import id_to_train_id_lut

    src = tmp_path / "cs"
    ids_of = make_tree(src)
    assert convert_main(["cityscapes", str(src), str(tmp_path / "out")]) == 0
    assert "wrote 7 file(s)" in capsys.readouterr().out
    lut = id_to_train_id_lut()
    for key, ids in ids_of.items():
        subset = "val" if key.startswith("frankfurt") else "train"
        out = tmp_path / "out/gtFine" / subset / f"{key}_gtFine_labelTrainIds.png"
        got = np.asarray(Image.open(out))
        assert got.tolist() == lut[ids].tolist() == expected_train_ids(ids).tolist()
    # in place (DST = SRC), the converted PNGs are read by the dataset as trainIds
    assert convert_main(["cityscapes", str(src), str(src)]) == 0
    cfg = {"dataset": "cityscapes", "root": str(src)}
    tr = build_dataset({**cfg, "seg_map_suffix": "_gtFine_labelTrainIds.png"}, "val", False)
    ref = build_dataset(cfg, "val", False)
    assert tr.label_format == "train_ids" and all(np.array_equal(tr.load(i)[1], ref.load(i)[1]) for i in range(2))
    assert convert_main(["cityscapes-splits", str(src), str(src / "splits"), "--seed", "3"]) == 0
    assert len((src / "splits/train_labeled_1-2.txt").read_text().splitlines()) == 1 + 3  # header + 3


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        convert_main(["cityscape", "a", "b"])
    assert exc.value.code == 2 and "unknown dataset 'cityscape' (did you mean 'cityscapes'?)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        convert_main(["cityscapes", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert exc.value.code == 1 and f"SRC not found: {tmp_path / 'missing'}" in capsys.readouterr().err
    (tmp_path / "notcs").mkdir()
    with pytest.raises(SystemExit) as exc:
        convert_main(["cityscapes", str(tmp_path / "notcs"), str(tmp_path / "out")])
    assert exc.value.code == 1 and f"is {tmp_path / 'notcs'} the Cityscapes root?" in capsys.readouterr().err
    src = tmp_path / "cs"
    make_tree(src)
    bad = src / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    save_png(np.full((H, W), 200, np.uint8), bad)
    with pytest.raises(SystemExit) as exc:
        convert_main(["cityscapes", str(src), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and str(bad) in err and "unexpected label encoding" in err
    run = subprocess.run([sys.executable, "-m", "segproto.tools.convert", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "cityscapes_splits" in run.stdout
