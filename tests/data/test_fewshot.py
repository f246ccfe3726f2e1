"""Few-shot data: builtin folds, fold resolution, seeded episodes, base-class remapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segproto.data import (BaseClassDataset, DatasetError, EpisodeDataset, build_dataset,
                           class_pixel_counts, fold_classes, generate_synthetic, resolve_folds)
from segproto.data.fewshot import BUILTIN_FOLDS_DIR, builtin_folds_text, write_builtin_folds

COMMON = [0, 1, 3, 8]  # classes in (almost) every image of the tiny dataset


@pytest.fixture(scope="session")
def fs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_fewshot")
    generate_synthetic(root, num_train=16, num_val=6, num_test=6, image_size=32, seed=0)
    return root


def _cfg(root: Path) -> dict:
    return {"dataset": "synthetic", "root": str(root), "crop_size": 24,
            "scale_range": [0.75, 1.25]}


@pytest.fixture(scope="session")
def train_eval(fs_root):
    """The train split with the eval transform (labels stay aligned with the PNGs)."""
    return build_dataset(_cfg(fs_root), "train", train=False)


def _raw(ds, i: int) -> np.ndarray:
    return np.asarray(Image.open(ds.ann_paths[i]))


# ------------------------------------------------------------------ folds

def test_builtin_folds_match_the_published_formulas():
    pascal = resolve_folds("builtin:pascal5i", "/nonexistent")
    assert pascal == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15],
                      [16, 17, 18, 19, 20]]
    coco = resolve_folds("builtin:coco20i", "/nonexistent")
    assert len(coco) == 4 and all(len(f) == 20 for f in coco)
    for i, fold in enumerate(coco):
        assert fold == [c for c in range(1, 81) if c % 4 == (i + 1) % 4]
        assert fold[:3] == [i + 1, i + 5, i + 9] and fold[-1] == i + 77
    assert sorted(c for f in coco for c in f) == list(range(1, 81))


def test_builtin_fold_files_are_reproduced_by_their_generator(tmp_path):
    for name in ("pascal5i", "coco20i"):
        shipped = (BUILTIN_FOLDS_DIR / f"{name}.yaml").read_text()
        assert builtin_folds_text(name) == shipped
        assert "PFENet" in shipped and "HDMNet" in shipped
    written = write_builtin_folds(tmp_path)
    for p in written:
        assert p.read_text() == (BUILTIN_FOLDS_DIR / p.name).read_text()
    assert "person, airplane" in (BUILTIN_FOLDS_DIR / "coco20i.yaml").read_text()


def test_resolve_folds_default_relative_and_absolute(fs_root):
    want = [[c for c in range(22) if c % 4 == f] for f in range(4)]
    assert resolve_folds(None, fs_root) == want
    assert resolve_folds("folds.yaml", fs_root) == want
    assert resolve_folds(str(fs_root / "folds.yaml"), "/elsewhere") == want


def test_resolve_folds_errors_name_the_file(fs_root):
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        resolve_folds("missing.yaml", fs_root)
    with pytest.raises(FileNotFoundError, match=r"builtin:pascal5i"):
        resolve_folds("builtin:voc", fs_root)
    with pytest.raises(FileNotFoundError, match=r"folds\.yaml"):
        resolve_folds(None, fs_root / "img_dir")


def test_fold_classes_and_bad_fold():
    folds = [[0, 4], [1, 5], [2], [3]]
    assert fold_classes(folds, 1) == ([1, 5], [0, 2, 3, 4])
    with pytest.raises(ValueError, match=r"fewshot.fold=4 .*4 folds .*0\.\.3"):
        fold_classes(folds, 4)
    with pytest.raises(ValueError, match=r"fewshot.fold=-1"):
        fold_classes(folds, -1)


# ------------------------------------------------------------------ pixel counts, usable images

def test_class_pixel_counts_match_numpy(train_eval):
    counts = class_pixel_counts(train_eval)
    assert counts.shape == (16, 22)
    for i in range(16):
        raw = _raw(train_eval, i)
        for c in range(22):
            assert counts[i, c] == int((raw == c).sum())


def test_usable_images_respect_min_fg_pixels(train_eval):
    ds = EpisodeDataset(train_eval, COMMON + [9], 2, min_fg_pixels=16)
    for c in COMMON + [9]:
        want = [i for i in range(16) if int((_raw(train_eval, i) == c).sum()) >= 16]
        assert ds.images[c] == want
    assert ds.episode_classes == sorted(COMMON + [9])
    assert len(ds) == sum(len(v) for v in ds.images.values())
    for i in range(len(ds)):
        c, q, sup = ds.episode(i)
        assert all(int((_raw(train_eval, j) == c).sum()) >= 16 for j in [q, *sup])


def test_exclude_classes_drops_images(train_eval):
    ds = EpisodeDataset(train_eval, [0, 3], 1, min_fg_pixels=1, exclude_classes=[6])
    free = [i for i in range(16) if not (_raw(train_eval, i) == 6).any()]
    assert ds.images[0] == free and 0 < len(free) < 16


def test_ignore_classes_become_ignore_in_query_and_support_masks(train_eval):
    # episode classes 0 and 3; class 8 (in every image) and class 1 set to ignore: the expected masks
    # come straight from the label PNGs
    ds = EpisodeDataset(train_eval, [0, 3], 2, min_fg_pixels=16, num_episodes=20, ignore_classes=[8, 1])
    hidden = 0
    for i in range(20):
        ep = ds[i]
        for mask, j in zip([ep["gt"], *ep["support_mask"]], [ep["query_index"], *ep["support_index"].tolist()]):
            raw = _raw(train_eval, j)
            want = np.where((raw == 255) | (raw == 8) | (raw == 1), 255, (raw == ep["cls"]).astype(np.int64))
            assert np.array_equal(mask.numpy(), want)
            hidden += int(((raw == 8) | (raw == 1)).sum())
    assert hidden > 0
    with pytest.raises(ValueError, match=r"classes \[3\] are both episode classes and ignore_classes"):
        EpisodeDataset(train_eval, [0, 3], 1, min_fg_pixels=1, ignore_classes=[3])


def test_too_few_images_error_names_class_and_count(train_eval):
    with pytest.raises(DatasetError, match=r"min_fg_pixels=8 .*class 12 \('bicycle'\): 0 image\(s\)"):
        EpisodeDataset(train_eval, [0, 4, 8, 12], 1, min_fg_pixels=8)
    with pytest.raises(DatasetError, match=r"class 10 \('truck'\): 2 image\(s\)"):
        EpisodeDataset(train_eval, [0, 10], 2, min_fg_pixels=4)  # 2 < shots + 1
    with pytest.warns(UserWarning, match="class 12"):
        ds = EpisodeDataset(train_eval, [0, 4, 8, 12], 1, min_fg_pixels=8,
                            skip_rare_classes=True)
    assert ds.episode_classes == [0, 4, 8]
    with pytest.raises(ValueError, match=r"\[22\].*\[0, 22\)"):
        EpisodeDataset(train_eval, [0, 22], 1, min_fg_pixels=1)


# ------------------------------------------------------------------ episodes

def test_eval_episodes_deterministic_and_seed_dependent(train_eval):
    counts = class_pixel_counts(train_eval)
    a = EpisodeDataset(train_eval, COMMON, 2, min_fg_pixels=16, num_episodes=30, seed=1,
                       pixel_counts=counts)
    b = EpisodeDataset(train_eval, COMMON, 2, min_fg_pixels=16, num_episodes=30, seed=1)
    c = EpisodeDataset(train_eval, COMMON, 2, min_fg_pixels=16, num_episodes=30, seed=2)
    eps = [a.episode(i) for i in range(30)]
    assert eps == [b.episode(i) for i in range(30)]
    assert eps != [c.episode(i) for i in range(30)]
    assert len({e[0] for e in eps}) > 1  # several classes drawn
    x, y = a[7], b[7]
    for k in ("img", "gt", "support_img", "support_mask", "support_index"):
        assert torch.equal(x[k], y[k]), k
    assert x["cls"] == y["cls"] and x["name"] == train_eval.names[x["query_index"]]
    with pytest.raises(IndexError, match="episode 30 out of range for 30"):
        a[30]


def test_supports_distinct_and_differ_from_query(train_eval):
    ds = EpisodeDataset(train_eval, COMMON, 5, min_fg_pixels=16, num_episodes=40)
    for i in range(40):
        _, q, sup = ds.episode(i)
        assert len(set(sup)) == 5 and q not in sup
    for s in range(40):
        _, q, sup = ds.episode((s % 3, 1000 + s))
        assert len(set(sup)) == 5 and q not in sup


def test_eval_masks_are_binary_with_ignore_kept(train_eval):
    ds = EpisodeDataset(train_eval, COMMON, 2, min_fg_pixels=16, num_episodes=30)
    ignored = 0
    for i in range(30):
        ep = ds[i]
        c = ep["cls"]
        assert ep["img"].shape == (3, 32, 32) and ep["support_img"].shape == (2, 3, 32, 32)
        assert ep["gt"].dtype == torch.long and ep["support_mask"].shape == (2, 32, 32)
        idx = [ep["query_index"], *ep["support_index"].tolist()]
        for mask, j in zip([ep["gt"], *ep["support_mask"]], idx):
            raw = _raw(train_eval, j)
            want = np.where(raw == 255, 255, (raw == c).astype(np.int64))
            assert np.array_equal(mask.numpy(), want)
            ignored += int((raw == 255).sum())
        assert torch.equal(ep["support_img"][0], train_eval[idx[1]]["img"])
    assert ignored > 0  # the check covered ignore pixels


def test_training_episodes_seeded_and_augmented(fs_root):
    base = build_dataset(_cfg(fs_root), "train", train=True)
    ds = EpisodeDataset(base, COMMON, 2, min_fg_pixels=16)
    a, b, c = ds[(3, 123)], ds[(3, 123)], ds[(3, 124)]
    assert a["img"].shape == (3, 24, 24) and a["support_img"].shape == (2, 3, 24, 24)
    for k in ("img", "gt", "support_img", "support_mask"):
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["img"], c["img"])
    for ep in (a, c):
        assert set(ep["gt"].unique().tolist()) <= {0, 1, 255}
        assert set(ep["support_mask"].unique().tolist()) <= {0, 1, 255}
        assert (ep["gt"] == 1).any() and all((m == 1).any() for m in ep["support_mask"])
        assert ep["query_index"] not in ep["support_index"].tolist()
        c_, q, sup = ds.episode((3, 123 if ep is a else 124))
        assert (ep["cls"], ep["query_index"], ep["support_index"].tolist()) == (c_, q, sup)


# ------------------------------------------------------------------ base-class stage one

def test_base_class_dataset_lut_matches_hand_table(train_eval):
    ds = BaseClassDataset(train_eval, [9, 1, 5])
    assert ds.classes == ["sidewalk", "fence", "car"] and ds.num_classes == 3
    assert ds.palette == [train_eval.palette[c] for c in (1, 5, 9)] and ds.taxonomy is None
    gt = torch.tensor([[0, 1, 2, 5], [9, 255, 21, 1]])
    assert ds.remap(gt).tolist() == [[255, 0, 255, 1], [2, 255, 255, 0]]
    for i in (0, 11):  # image 11 holds ignore pixels
        raw = _raw(train_eval, i)
        table = {1: 0, 5: 1, 9: 2}
        want = np.vectorize(lambda v: table.get(int(v), 255))(raw)
        assert np.array_equal(ds[i]["gt"].numpy(), want)
    assert len(ds) == len(train_eval)
    with pytest.raises(ValueError, match=r"base_classes .*\[0, 22\)"):
        BaseClassDataset(train_eval, [3, 40])
