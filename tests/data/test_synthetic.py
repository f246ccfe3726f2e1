"""Built-in synthetic benchmark: determinism, class coverage and rarity, layout, reuse."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segproto.data import (Taxonomy, generate_synthetic, load_folds, read_split,
                           render_sample, synthetic_taxonomy)
from segproto.data.synthetic import sample_name

from .conftest import SMALL

TINY = dict(num_train=5, num_val=2, num_test=2, image_size=64, seed=3)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _labels(root: Path, split: str) -> np.ndarray:
    names = read_split(root / "splits" / f"{split}.txt")
    return np.stack([np.asarray(Image.open(root / "ann_dir" / split / f"{n}.png"))
                     for n in names])


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _tree_bytes(generate_synthetic(tmp_path / "a", **TINY))
    b = _tree_bytes(generate_synthetic(tmp_path / "b", **TINY))
    assert a == b
    assert len([k for k in a if k.startswith("img_dir")]) == 9
    c = _tree_bytes(generate_synthetic(tmp_path / "c", **{**TINY, "seed": 4}))
    img = "img_dir/train/train_000000.png"
    assert a[img] != c[img]


def test_bytes_do_not_depend_on_order_or_workers(tmp_path):
    root = generate_synthetic(tmp_path / "w", **TINY, num_workers=2)
    assert _tree_bytes(root) == _tree_bytes(generate_synthetic(tmp_path / "s", **TINY))
    # rendering one image alone, in reverse order, gives the stored pixels
    for split, n in (("test", 2), ("train", 5)):
        for i in reversed(range(n)):
            img, lab = render_sample(TINY["seed"], split, i, TINY["image_size"])
            name = sample_name(split, i)
            np.testing.assert_array_equal(
                np.asarray(Image.open(root / "img_dir" / split / f"{name}.png")), img)
            np.testing.assert_array_equal(
                np.asarray(Image.open(root / "ann_dir" / split / f"{name}.png")), lab)


def test_image_format_and_label_range(synth_root):
    tax = Taxonomy.from_yaml(synth_root / "taxonomy.yaml")
    k = tax.num_classes("fine")
    with Image.open(synth_root / "img_dir/val/val_000000.png") as im:
        assert im.mode == "RGB" and im.size == (128, 128)
    with Image.open(synth_root / "ann_dir/val/val_000000.png") as im:
        assert im.mode == "L" and im.size == (128, 128)
    values = np.unique(_labels(synth_root, "train"))
    assert set(values.tolist()) <= set(range(k)) | {255}


def test_every_fine_class_appears_and_rare_classes_are_rare(synth_root):
    tax = Taxonomy.from_yaml(synth_root / "taxonomy.yaml")
    names = tax.class_names("fine")
    assert len(names) >= 15 and tax.num_classes("coarse") >= 5
    labs = _labels(synth_root, "train")  # [N, H, W]
    n = len(labs)
    present = np.stack([(labs == c).any(axis=(1, 2)) for c in range(len(names))])  # [K, N]
    img_frac = dict(zip(names, present.mean(1)))
    pix_frac = dict(zip(names, [(labs == c).mean() for c in range(len(names))]))
    assert min(img_frac.values()) > 0, [c for c, f in img_frac.items() if f == 0]
    for rare in ("bicycle", "rider", "traffic light", "bus", "truck"):
        assert img_frac[rare] < 0.25, (rare, img_frac[rare])
    for common in ("road", "sky", "building"):
        assert img_frac[common] > 0.9, (common, img_frac[common])
    # very different sizes: small classes cover < 0.2% of pixels, large ones > 10%
    for small in ("traffic light", "bicycle", "rider"):
        assert pix_frac[small] < 0.002, (small, pix_frac[small])
    for large in ("road", "building", "sky"):
        assert pix_frac[large] > 0.1, (large, pix_frac[large])
    # meta.json statistics agree with the files
    stats = json.loads((synth_root / "meta.json").read_text())["stats"]["train"]
    assert stats["images"] == present.sum(1).tolist()
    assert stats["pixels"] == [int((labs == c).sum()) for c in range(len(names))]
    assert 0 < stats["ignore_pixels"] == int((labs == 255).sum())
    assert n == SMALL["num_train"]


def test_same_coarse_fine_classes_are_confusable_in_colour(synth_root):
    """Mean colours of siblings are closer than those of classes of other coarse groups."""
    names = read_split(synth_root / "splits/train.txt")[:80]
    imgs = np.stack([np.asarray(Image.open(synth_root / f"img_dir/train/{n}.png"))
                     for n in names]).astype(np.float64)
    labs = np.stack([np.asarray(Image.open(synth_root / f"ann_dir/train/{n}.png"))
                     for n in names])
    tax = synthetic_taxonomy(2)
    cid = {c: i for i, c in enumerate(tax.class_names(0))}
    mean = {c: imgs[labs == cid[c]].mean(0) for c in ("road", "parking", "sidewalk", "car",
                                                       "truck", "bus", "sky", "vegetation")}
    dist = lambda a, b: float(np.linalg.norm(mean[a] - mean[b]))  # noqa: E731
    assert dist("road", "parking") < 20 < dist("road", "sky")
    assert max(dist("car", "truck"), dist("car", "bus")) < dist("road", "vegetation")


def test_layout_splits_and_folds(synth_root):
    n = SMALL["num_train"]
    train = read_split(synth_root / "splits/train.txt")
    assert train == [sample_name("train", i) for i in range(n)]
    assert len(read_split(synth_root / "splits/val.txt")) == SMALL["num_val"]
    previous: set[str] = set()
    for k in (16, 8, 4, 2):
        lab = read_split(synth_root / f"splits/train_labeled_1-{k}.txt")
        unl = read_split(synth_root / f"splits/train_unlabeled_1-{k}.txt")
        assert len(lab) == math.ceil(n / k)
        assert set(lab).isdisjoint(unl) and sorted(lab + unl) == sorted(train)
        assert previous <= set(lab)  # nested: 1/16 within 1/8 within ...
        previous = set(lab)
    folds = load_folds(synth_root)
    k_fine = synthetic_taxonomy(2).num_classes(0)
    assert len(folds) == 4
    assert sorted(c for f in folds for c in f) == list(range(k_fine))
    three = Taxonomy.from_yaml(synth_root / "taxonomy_3level.yaml")
    assert three.level_names == ["fine", "middle", "coarse"]
    meta = json.loads((synth_root / "meta.json").read_text())
    assert meta["classes"] == three.class_names(0)
    assert meta["fine_to_coarse"] == three.parent_map(0, 2).tolist()


def test_reuse_and_overwrite(tmp_path):
    root = generate_synthetic(tmp_path / "r", **TINY)
    meta = root / "meta.json"
    img = root / "img_dir/train/train_000000.png"
    stamp = (meta.stat().st_mtime_ns, img.stat().st_mtime_ns)
    assert generate_synthetic(root, **TINY) == root
    assert (meta.stat().st_mtime_ns, img.stat().st_mtime_ns) == stamp  # not rewritten
    with pytest.raises(FileExistsError) as info:
        generate_synthetic(root, **{**TINY, "num_train": 3})
    assert str(meta) in str(info.value) and "num_train" in str(info.value)
    assert "num_val" not in str(info.value)
    generate_synthetic(root, **{**TINY, "num_train": 3}, overwrite=True)
    assert len(list((root / "img_dir/train").iterdir())) == 3  # old extra files removed
    assert json.loads(meta.read_text())["params"]["num_train"] == 3


def test_interrupted_generation_is_detected_and_redone(tmp_path):
    ref = _tree_bytes(generate_synthetic(tmp_path / "ref", **TINY))
    root = generate_synthetic(tmp_path / "x", **TINY)
    # simulate a crash half-way: marker present, meta.json (written last) absent
    (root / "meta.json").unlink()
    (root / ".generating").write_text("{}")
    (root / "img_dir/train/train_000001.png").write_bytes(b"truncated")
    assert _tree_bytes(generate_synthetic(root, **TINY)) == ref
    assert not (root / ".generating").exists()


def test_foreign_directory_is_not_clobbered(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="no meta.json"):
        generate_synthetic(root, **TINY)
    generate_synthetic(root, **TINY, overwrite=True)
    assert (root / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="image_size"):
        generate_synthetic(tmp_path / "bad", **{**TINY, "image_size": 8})


def test_command_line(tmp_path, capsys):
    from segproto.data.generate import main

    main([str(tmp_path / "cli"), "--num-train", "2", "--num-val", "1", "--num-test", "1",
          "--image-size", "48", "--seed", "3"])
    assert "ready in" in capsys.readouterr().out
    meta = json.loads((tmp_path / "cli/meta.json").read_text())
    assert meta["params"]["num_train"] == 2 and meta["params"]["image_size"] == 48
    img, _ = render_sample(3, "val", 0, 48)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cli/img_dir/val/"
                                                        "val_000000.png")), img)
