"""HDMNet through the one trainer: base-class stage one, episodic training with a frozen stage-one
backbone, exact resume, and ``python -m segproto.test`` over several episode seeds."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segproto.config import load_config
from segproto.data.fewshot import BaseClassDataset, EpisodeDataset

from .conftest import assert_resume_exact

REPO = Path(__file__).resolve().parents[2]
# road (0) is the novel class of fold 0; sidewalk, building and sky are base classes. Frequent
# classes only, so that the 6-image validation split of the tiny dataset has episodes.
FOLDS = "num_folds: 3\nfolds:\n  - [0]\n  - [8]\n  - [1, 3]\n"


def write_cfg(path: Path, root: Path, folds: Path, **fewshot) -> Path:
    cfg = {
        "_base_": str(REPO / "configs/_base_/default.yaml"),
        "seed": 5,
        "data": {"root": str(root), "synthetic": {"num_train": 16, "num_val": 6, "num_test": 6, "image_size": 32},
                 "crop_size": [32, 32], "batch_size": 2, "val_batch_size": 3},
        "model": {"arch": "fcn", "backbone": "resnet18", "output_stride": 8, "channels": 16},
        "fewshot": {"fold": 0, "folds": str(folds), "min_fg_pixels": 4, "val_episodes": 6,
                    "novel_pixels": "background", **fewshot},  # every tiny image holds road (novel)
        "train": {"iters": 4, "eval_interval": 2, "log_interval": 2, "checkpoint_interval": 2,
                  "max_keep_ckpts": -1, "progress_bar": False},
    }
    if fewshot.get("base_training"):
        cfg["method"] = {"name": "ce"}
    else:
        cfg["method"] = {"name": "hdmnet"}
        cfg["data"]["batch_size"] = 2
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def stage_one(tiny_root, tmp_path_factory):
    """A 4-iteration base-class CE run of fold 0; returns (folds file, checkpoint template)."""
    from segproto.engine import Trainer

    tmp = tmp_path_factory.mktemp("hdmnet_stage_one")
    folds = tmp / "folds.yaml"
    folds.write_text(FOLDS)
    cfg = load_config(write_cfg(tmp / "base.yaml", tiny_root, folds, base_training=True))
    trainer = Trainer(cfg, tmp / "base_fold0")
    assert isinstance(trainer.train_set, BaseClassDataset)
    assert trainer.num_classes == 3 and trainer.class_names == ["sidewalk", "building", "sky"]
    metrics = trainer.run()
    assert len(metrics["IoU"]) == 3
    return folds, str(tmp / "base_fold{fold}" / "iter_4.pth")


def test_hdmnet_trains_on_episodes_with_the_frozen_stage_one_backbone(stage_one, tiny_root, tmp_path):
    from segproto.engine import Trainer, load_checkpoint

    folds, ckpt = stage_one
    cfg = load_config(write_cfg(tmp_path / "cfg.yaml", tiny_root, folds, backbone_checkpoint=ckpt))
    trainer = Trainer(cfg, tmp_path / "run")
    assert isinstance(trainer.train_set, EpisodeDataset) and isinstance(trainer.val_set, EpisodeDataset)
    assert trainer.train_set.class_ids == [1, 3, 8] and trainer.val_set.class_ids == [0]
    metrics = trainer.run()
    assert set(metrics) >= {"mIoU", "FB-IoU", "IoU", "classes", "episodes"}
    assert metrics["classes"] == ["road"] and metrics["episodes"] == 6
    base = load_checkpoint(ckpt.format(fold=0))["model"]
    trained = load_checkpoint(tmp_path / "run" / "iter_4.pth")["model"]
    frozen = {k[len("model.backbone."):]: v for k, v in trained.items() if k.startswith("model.backbone.")}
    assert frozen, "no backbone weights in the HDMNet checkpoint"
    for k, v in frozen.items():  # loaded from stage one and never changed (BN statistics included)
        assert torch.equal(v, base["segmentor.backbone." + k]), k
    logged = [json.loads(x) for x in (tmp_path / "run" / "scalars.jsonl").read_text().splitlines()]
    assert any("loss_distill" in r for r in logged if r["mode"] == "train")
    assert [r["iter"] for r in logged if r["mode"] == "val"] == [2, 4]
    assert all("FB-IoU" in r for r in logged if r["mode"] == "val")


def test_hdmnet_resumes_exactly(stage_one, tiny_root, tmp_path):
    folds, ckpt = stage_one
    assert_resume_exact(write_cfg(tmp_path / "cfg.yaml", tiny_root, folds, backbone_checkpoint=ckpt, shots=2),
                        tmp_path)


def test_distill_weight_zero_trains_with_ce_only(stage_one, tiny_root, tmp_path):
    from segproto.engine import Trainer

    folds, ckpt = stage_one
    cfg = load_config(write_cfg(tmp_path / "cfg.yaml", tiny_root, folds, backbone_checkpoint=ckpt,
                                distill_weight=0.0))
    Trainer(cfg, tmp_path / "run").run()
    logged = [json.loads(x) for x in (tmp_path / "run" / "scalars.jsonl").read_text().splitlines()]
    assert not any("loss_distill" in r for r in logged)


def test_segproto_test_averages_episode_seeds(stage_one, tiny_root, tmp_path):
    from segproto.engine import Trainer
    from segproto.test import main as test_main

    folds, ckpt = stage_one
    path = write_cfg(tmp_path / "cfg.yaml", tiny_root, folds, backbone_checkpoint=ckpt, eval_seeds=[0, 1, 2])
    Trainer(load_config(path), tmp_path / "run").run()
    out = tmp_path / "test.json"
    assert test_main([str(path), str(tmp_path / "run" / "iter_4.pth"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    seeds = res["seeds"]
    assert sorted(seeds) == ["0", "1", "2"]
    for key in ("mIoU", "FB-IoU"):
        vals = [seeds[s][key] for s in ("0", "1", "2")]
        assert res[key] == pytest.approx(sum(vals) / 3)
        mean = sum(vals) / 3
        assert res[f"{key}_std"] == pytest.approx((sum((v - mean) ** 2 for v in vals) / 2) ** 0.5)
    assert res["shots"] == 1 and res["fold"] == 0
    # the evaluation feature cache (on by default) changes nothing but the time
    off = tmp_path / "nocache.json"
    assert test_main([str(path), str(tmp_path / "run" / "iter_4.pth"), "--out", str(off),
                      "--cfg-options", "fewshot.feature_cache_mb=0"]) == 0
    plain = json.loads(off.read_text())["seeds"]
    for s in ("0", "1", "2"):
        for key in ("mIoU", "FB-IoU"):
            assert seeds[s][key] == pytest.approx(plain[s][key], abs=1e-6), (s, key)


def test_few_shot_config_errors_name_the_key(tiny_root, tmp_path):
    from segproto.engine import Trainer
    from segproto.engine.checkpoint import CheckpointError

    folds = tmp_path / "folds.yaml"
    folds.write_text(FOLDS)
    cfg = load_config(write_cfg(tmp_path / "cfg.yaml", tiny_root, folds, fold=7))
    with pytest.raises(ValueError, match="fewshot.fold"):
        Trainer(cfg, tmp_path / "run")
    cfg = load_config(write_cfg(tmp_path / "cfg.yaml", tiny_root, folds,
                                backbone_checkpoint=str(tmp_path / "missing.pth")))
    with pytest.raises(CheckpointError, match="missing.pth"):
        Trainer(cfg, tmp_path / "run2")


def test_export_holds_the_hdmnet_and_tests_like_the_checkpoint(stage_one, tiny_root, tmp_path):
    from segproto.engine import Trainer
    from segproto.export import main as export_main
    from segproto.test import main as test_main

    folds, ckpt = stage_one
    path = write_cfg(tmp_path / "cfg.yaml", tiny_root, folds, backbone_checkpoint=ckpt)
    Trainer(load_config(path), tmp_path / "run").run()
    assert export_main([str(path), str(tmp_path / "run" / "iter_4.pth"), str(tmp_path / "hdm.pth")]) == 0
    exported = torch.load(tmp_path / "hdm.pth", weights_only=True)["segmentor"]
    trained = torch.load(tmp_path / "run" / "iter_4.pth", weights_only=True)["model"]
    assert sorted(exported) == sorted(k[len("model."):] for k in trained if k.startswith("model."))
    results = []
    for src in (tmp_path / "run" / "iter_4.pth", tmp_path / "hdm.pth"):
        out = tmp_path / f"{src.stem}.json"
        assert test_main([str(path), str(src), "--out", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0] == results[1]


@pytest.mark.parametrize("rule", ["exclude", "ignore", "background"])
def test_novel_pixels_rule_of_the_training_episodes(tmp_path, rule):
    """fewshot.novel_pixels on the training split: which images serve, and what novel pixels become.
    The folds here make class 6 (vegetation, in some images) novel, so "exclude" leaves images."""
    from segproto.data import build_dataset, generate_synthetic
    from segproto.engine.fewshot import wrap_fewshot

    root = tmp_path / "data"
    generate_synthetic(root, num_train=16, num_val=6, num_test=6, image_size=32, seed=0)
    folds = tmp_path / "folds.yaml"
    folds.write_text(yaml.safe_dump({"num_folds": 2, "folds": [[6], [0, 1, 3, 8]]}))
    cfg = load_config(write_cfg(tmp_path / "c.yaml", root, folds, novel_pixels=rule))
    plain = build_dataset({"dataset": "synthetic", "root": str(root)}, "train", train=False)
    raw = [np.asarray(Image.open(p)) for p in plain.ann_paths]
    holders = {i for i, r in enumerate(raw) if (r == 6).any()}
    assert 0 < len(holders) < 16
    episodes = wrap_fewshot(cfg, plain, train=True)
    used = set().union(*episodes.images.values())
    if rule == "exclude":
        assert used.isdisjoint(holders)
        return
    assert used & holders
    seen = 0
    for s in range(60):
        ep = episodes[(s, 7)]
        r = raw[ep["query_index"]]
        assert (ep["gt"].numpy()[r == 6] == (255 if rule == "ignore" else 0)).all()
        seen += int((r == 6).sum())
    assert seen > 0  # some queries held novel pixels


def test_exclude_that_leaves_no_image_names_the_key(tmp_path):
    from segproto.data import DatasetError, build_dataset, generate_synthetic
    from segproto.engine.fewshot import wrap_fewshot

    root = tmp_path / "data"
    generate_synthetic(root, num_train=16, num_val=6, num_test=6, image_size=32, seed=0)
    folds = tmp_path / "folds.yaml"
    folds.write_text(FOLDS)  # road, in every image, is novel
    cfg = load_config(write_cfg(tmp_path / "c.yaml", root, folds, novel_pixels="exclude"))
    plain = build_dataset({"dataset": "synthetic", "root": str(root)}, "train", train=False)
    with pytest.raises(DatasetError, match=r"0 image\(s\).*fewshot.novel_pixels=exclude drops every training "
                                           r"image holding a pixel of a novel class \[0\].*novel_pixels=ignore"):
        wrap_fewshot(cfg, plain, train=True)
