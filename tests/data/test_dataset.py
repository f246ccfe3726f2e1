"""Folder / file-list datasets: content, index forms, and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segproto.data import (DatasetError, FileListDataset, SegDataset, TrainTransform,
                           load_folds, read_split)
from segproto.data.transforms import IMAGENET_MEAN, IMAGENET_STD

CLASSES = ["a", "b", "c"]


def _make(root: Path, names=("x0", "x1", "x2"), size=(6, 5)) -> Path:
    """Folder dataset with random images and labels in {0, 1, 2, 255}."""
    rng = np.random.default_rng(0)
    for sub in ("img", "ann"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n in names:
        (root / "img" / n).parent.mkdir(parents=True, exist_ok=True)
        (root / "ann" / n).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / "img" / f"{n}.png")
        lab = rng.choice(np.array([0, 1, 2, 255], np.uint8), size)
        Image.fromarray(lab, "L").save(root / "ann" / f"{n}.png")
    (root / "train.txt").write_text("# a comment\n" + "\n".join(names) + "\n\n")
    return root


def _ds(root: Path, split="train.txt", **kw) -> SegDataset:
    return SegDataset(root, "img", "ann", split, classes=CLASSES, **kw)


def test_sample_content_matches_files(tmp_path):
    root = _make(tmp_path)
    ds = _ds(root)
    assert len(ds) == 3 and ds.num_classes == 3
    s = ds[1]
    assert set(s) == {"img", "gt", "name"} and s["name"] == "x1"
    raw = np.asarray(Image.open(root / "img/x1.png"), np.float32)
    want = (raw - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert s["img"].dtype == torch.float32 and s["img"].shape == (3, 6, 5)
    np.testing.assert_allclose(s["img"].permute(1, 2, 0).numpy(), want, rtol=1e-5, atol=1e-5)
    assert s["gt"].dtype == torch.int64
    assert s["gt"].tolist() == np.asarray(Image.open(root / "ann/x1.png")).tolist()
    assert ds[-1]["name"] == "x2"
    with pytest.raises(IndexError):
        ds[3]


def test_tuple_index_drives_augmentation(tmp_path):
    ds = _ds(_make(tmp_path, size=(20, 20)), transform=TrainTransform(8))
    a, b = ds[(0, 11)], ds[(0, 11)]
    assert torch.equal(a["img"], b["img"]) and torch.equal(a["gt"], b["gt"])
    assert a["img"].shape == (3, 8, 8)
    others = [ds[(0, s)]["img"] for s in range(5)]
    assert any(not torch.equal(o, others[0]) for o in others[1:])
    assert torch.equal(ds[0]["img"], ds[0]["img"])  # int index: deterministic


def test_split_none_lists_all_recursively_and_unlabelled(tmp_path):
    root = _make(tmp_path, names=("b/y", "a", "c/z/w"))
    ds = SegDataset(root, "img", "ann", None, classes=CLASSES)
    assert ds.names == ["a", "b/y", "c/z/w"]
    unl = SegDataset(root, "img", None, "train.txt", classes=CLASSES)
    assert "gt" not in unl[0]


def test_reduce_zero_label(tmp_path):
    root = _make(tmp_path, names=("x",))
    Image.fromarray(np.array([[0, 1, 3, 255]], np.uint8), "L").save(root / "ann/x.png")
    Image.fromarray(np.zeros((1, 4, 3), np.uint8)).save(root / "img/x.png")
    ds = _ds(root, reduce_zero_label=True)
    assert ds[0]["gt"].tolist() == [[255, 0, 2, 255]]


def test_missing_root_split_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset root not found: .*nowhere"):
        SegDataset(tmp_path / "nowhere", "img", "ann", None, classes=CLASSES)
    root = _make(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="split file not found: .*val.txt"):
        _ds(root, split="val.txt")
    (root / "img/x1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 listed file\(s\) missing.*x1.png"):
        _ds(root)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        SegDataset(root, "imgs", "ann", None, classes=CLASSES)


def test_corrupt_image_and_label(tmp_path):
    root = _make(tmp_path)
    (root / "img/x0.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = _ds(root)
    with pytest.raises(DatasetError, match=r"x0.png: cannot read image"):
        ds[0]
    (root / "ann/x1.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"ann/x1.png: cannot read label"):
        ds[1]
    Image.fromarray(np.zeros((6, 5, 4), np.uint8), "RGBA").save(root / "img/x2.png")
    with pytest.raises(DatasetError, match=r"x2.png: unsupported image mode 'RGBA'"):
        ds[2]


def test_size_mismatch_names_both_files(tmp_path):
    root = _make(tmp_path)
    Image.fromarray(np.zeros((6, 4), np.uint8), "L").save(root / "ann/x2.png")
    with pytest.raises(DatasetError) as info:
        _ds(root)[2]
    msg = str(info.value)
    assert "size mismatch" in msg and "img/x2.png" in msg and "ann/x2.png" in msg
    assert "5x6" in msg and "4x6" in msg


def test_bad_label_values_named(tmp_path):
    root = _make(tmp_path)
    lab = np.zeros((6, 5), np.uint8)
    lab[0, :3] = [3, 7, 255]
    Image.fromarray(lab, "L").save(root / "ann/x0.png")
    with pytest.raises(DatasetError, match=r"ann/x0.png: label values \[3, 7\] are outside"):
        _ds(root)[0]
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(root / "ann/x1.png")
    with pytest.raises(DatasetError, match=r"x1.png: label must be a single-channel"):
        _ds(root)[1]
    ok = _ds(root, ignore_index=7)  # 7 is now ignore, 3 is still bad
    with pytest.raises(DatasetError, match=r"\[3, 255\]"):
        ok[0]


def test_file_list_dataset(tmp_path):
    root = _make(tmp_path)
    lst = tmp_path / "list.txt"
    lst.write_text("img/x2.png ann/x2.png\n" + f"{root}/img/x0.png ann/x0.png\n")
    ds = FileListDataset(lst, classes=CLASSES)
    assert ds.names == ["img/x2.png", f"{root}/img/x0.png"]
    assert ds[0]["gt"].tolist() == np.asarray(Image.open(root / "ann/x2.png")).tolist()
    lst.write_text("img/x2.png ann/x2.png\nimg/x0.png\n")
    with pytest.raises(DatasetError, match="list.txt: every line"):
        FileListDataset(lst, classes=CLASSES)
    lst.write_text("img/x2.png nope.png\n")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        FileListDataset(lst, classes=CLASSES)


def test_read_split_and_folds(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("a\n\n  b  # note\n#c\n")
    assert read_split(p) == ["a", "b"]
    f = tmp_path / "folds.yaml"
    f.write_text("folds:\n  - [2, 0]\n  - [1]\n")
    assert load_folds(tmp_path) == [[0, 2], [1]]
    f.write_text("folds:\n  - [0, 1]\n  - [1]\n")
    with pytest.raises(DatasetError, match="folds.yaml: class 1 is in folds 0 and 1"):
        load_folds(f)
    with pytest.raises(FileNotFoundError, match="folds"):
        load_folds(tmp_path / "none")
