"""The trainer: outputs, exact resume, crash safety, NaN stop, bad input, export."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from segproto.engine import CheckpointError, NonFiniteLossError, Trainer, load_checkpoint
from segproto.engine.checkpoint import save_checkpoint
from tests.engine.conftest import REPO


def _reference_miou(cfg, ckpt, level: str = "fine") -> float:
    """mIoU of a checkpoint on the val split, from a NumPy confusion matrix (not SegEvaluator):
    IoU = TP / (TP + FP + FN) per class, NaN for an empty union, mean over the finite ones."""
    import numpy as np
    from torch.utils.data import DataLoader

    from segproto.engine.builder import build_split
    from segproto.engine.loading import load_trained

    ds = build_split(cfg, cfg.data.val_split, train=False)
    k = ds.num_classes
    method = load_trained(cfg, ckpt, k, ds.taxonomy)
    cm = np.zeros((k, k), np.int64)
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=cfg.data.val_batch_size):
            pred, gt = method(batch["img"]).argmax(1).numpy().ravel(), batch["gt"].numpy().ravel()
            keep = gt != cfg.data.ignore_index
            cm += np.bincount(gt[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
    if level != "fine":
        lv = ds.taxonomy.level_names.index(level)
        up = np.asarray([ds.taxonomy.parent_map(0, lv)[c] for c in range(k)])
        kc = int(up.max()) + 1
        coarse = np.zeros((kc, kc), np.int64)
        np.add.at(coarse, (up[:, None].repeat(k, 1), up[None, :].repeat(k, 0)), cm)
        cm = coarse
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou) * 100)


def test_outputs_and_metrics_json(tiny_cfg, tmp_path):
    wd = tmp_path / "wd"
    metrics = Trainer(tiny_cfg(), wd).run()
    saved = json.loads((wd / "metrics.json").read_text())
    assert {"aAcc", "mIoU", "mAcc", "IoU", "Acc", "classes", "levels", "best"} <= set(saved)
    assert saved["mIoU"] == pytest.approx(metrics["mIoU"])
    assert set(saved["levels"]) == {"fine", "coarse"}
    assert saved["levels"]["coarse"]["mIoU"] == pytest.approx(_reference_miou(tiny_cfg(), wd / "iter_6.pth", "coarse"))
    assert saved["mIoU"] == pytest.approx(_reference_miou(tiny_cfg(), wd / "iter_6.pth"))
    for f in ("config.yaml", "scalars.jsonl", "iter_3.pth", "iter_6.pth", "last_checkpoint", "curves.png",
              "per_class_iou.png"):
        assert (wd / f).is_file(), f
    assert (wd / "last_checkpoint").read_text() == "iter_6.pth"
    recs = [json.loads(ln) for ln in (wd / "scalars.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in recs if r["mode"] == "val"] == [3, 6]
    assert [r["iter"] for r in recs if r["mode"] == "train"] == [2, 4, 6]
    assert all({"lr", "loss_ce", "time", "data_time", "memory_mb"} <= set(r) for r in recs if r["mode"] == "train")
    best = list(wd.glob("best_mIoU_iter_*.pth"))
    assert len(best) == 1 and int(best[0].stem.rsplit("_", 1)[1]) == saved["best"]["iter"]
    ckpt = torch.load(wd / "iter_6.pth", weights_only=True)  # loads with weights_only
    assert ckpt["meta"]["iter"] == 6


def test_seeded_runs_reproduce_exactly(tiny_cfg, tmp_path):
    a = Trainer(tiny_cfg(iters=3, eval_interval=3), tmp_path / "a").run()
    b = Trainer(tiny_cfg(iters=3, eval_interval=3), tmp_path / "b").run()
    assert a["IoU"] == b["IoU"] or (json.dumps(a["IoU"]) == json.dumps(b["IoU"]))
    wa, wb = (load_checkpoint(tmp_path / d / "iter_3.pth")["model"] for d in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_exactly(tiny_cfg, tmp_path):
    full = tmp_path / "full"
    Trainer(tiny_cfg(), full).run()
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(full / "iter_3.pth", part / "iter_3.pth")  # as if the run died after iteration 3
    resumed = Trainer(tiny_cfg(), part, resume=True).run()
    want = load_checkpoint(full / "iter_6.pth")
    got = load_checkpoint(part / "iter_6.pth")
    for k in want["model"]:
        assert torch.equal(want["model"][k], got["model"][k]), k
    assert json.loads((full / "metrics.json").read_text())["IoU"] == json.loads((part / "metrics.json").read_text())["IoU"]
    assert resumed["mIoU"] == json.loads((full / "metrics.json").read_text())["mIoU"]
    # the final checkpoint resumed into a fresh dir (no scalars.jsonl): evaluates, writes metrics
    fresh = Trainer(tiny_cfg(), tmp_path / "fresh", resume=str(full / "iter_6.pth")).run()
    assert fresh["mIoU"] == resumed["mIoU"] and (tmp_path / "fresh/metrics.json").is_file()


def test_train_seconds_add_up_over_a_resume(tiny_cfg, tmp_path):
    full = tmp_path / "full"
    Trainer(tiny_cfg(), full).run()
    first = json.loads((full / "metrics.json").read_text())
    assert first["train_seconds"] == first["process_seconds"] > 0 and "train_seconds_partial" not in first
    before = load_checkpoint(full / "iter_3.pth")["meta"]["train_seconds"]
    assert 0 < before < first["train_seconds"]
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(full / "iter_3.pth", part / "iter_3.pth")
    Trainer(tiny_cfg(), part, resume=True).run()
    got = json.loads((part / "metrics.json").read_text())
    assert got["train_seconds"] == pytest.approx(before + got["process_seconds"], abs=1e-6)
    assert load_checkpoint(part / "iter_6.pth")["meta"]["train_seconds"] > before
    # a checkpoint that does not hold the count (written before it existed): the total is marked partial
    state = load_checkpoint(full / "iter_3.pth")
    del state["meta"]["train_seconds"]
    old = tmp_path / "old"
    old.mkdir()
    torch.save(state, old / "iter_3.pth")
    Trainer(tiny_cfg(), old, resume=True).run()
    got = json.loads((old / "metrics.json").read_text())
    assert got["train_seconds_partial"] is True and got["train_seconds"] == got["process_seconds"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    wd = tmp_path / "wd"
    trainer = Trainer(tiny_cfg(), wd)
    real = trainer.method.forward

    def poisoned(img, gt=None, it=0):
        out = real(img, gt, it)
        if it == 5:
            out["loss_ce"] = out["loss_ce"] * float("nan")
        return out

    monkeypatch.setattr(trainer.method, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at iteration 5 \(loss_ce=nan\).*iter_3\.pth"):
        trainer.run()
    assert (wd / "last_checkpoint").read_text() == "iter_3.pth"
    assert load_checkpoint(wd / "iter_3.pth")["meta"]["iter"] == 3
    assert not (wd / "iter_6.pth").exists()


def test_crash_during_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    save_checkpoint({"model": {"w": torch.ones(2)}, "meta": {"iter": 1}}, tmp_path, 1, -1, best=False)

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "meta": {"iter": 2}}, tmp_path, 2, -1, best=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_1.pth", "last_checkpoint"]
    assert (tmp_path / "last_checkpoint").read_text() == "iter_1.pth"
    assert torch.equal(load_checkpoint(tmp_path / "iter_1.pth")["model"]["w"], torch.ones(2))


def test_keep_limit_and_best_copy(tmp_path):
    for it, best in [(1, True), (2, False), (3, True), (4, False)]:
        save_checkpoint({"model": {}, "meta": {"iter": it}}, tmp_path, it, 2, best)
    names = sorted(p.name for p in tmp_path.glob("*.pth"))
    assert names == ["best_mIoU_iter_3.pth", "iter_3.pth", "iter_4.pth"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "iter_1.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*iter_1.pth"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pth")


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_bad_config_key_and_type(write_cfg, tmp_path):
    cfg = write_cfg()
    out = _cli("segproto.train", str(cfg), "--cfg-options", "train.itres=5")
    assert out.returncode == 2 and "unknown key 'train.itres' (did you mean 'train.iters'?)" in out.stderr
    out = _cli("segproto.train", str(cfg), "--opts", "data.batch_size=four")
    assert out.returncode == 2 and "data.batch_size" in out.stderr and "four" in out.stderr


def test_cli_missing_dataset_root(write_cfg, tmp_path):
    out = _cli("segproto.train", str(write_cfg()), "--work-dir", str(tmp_path / "wd"), "--cfg-options",
               "data.dataset=folder", f"data.root={tmp_path / 'missing'}", "data.classes=[a,b]")
    assert out.returncode == 1 and str(tmp_path / "missing") in out.stderr and "Traceback" not in out.stderr


def test_resume_without_checkpoint_is_clear(tiny_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        Trainer(tiny_cfg(), tmp_path / "empty", resume=True)


def test_test_infer_export_entry_points(tiny_cfg, write_cfg, tmp_path, tiny_root):
    wd = tmp_path / "wd"
    cfg_path = write_cfg(iters=2, eval_interval=2, checkpoint_interval=2)
    Trainer(tiny_cfg(iters=2, eval_interval=2, checkpoint_interval=2), wd).run()
    out = _cli("segproto.test", str(cfg_path), str(wd / "iter_2.pth"), "--out", str(tmp_path / "m.json"),
               "--show-dir", str(tmp_path / "show"), "--split", "val")
    assert out.returncode == 0, out.stderr
    val_metrics = json.loads((wd / "metrics.json").read_text())
    assert json.loads((tmp_path / "m.json").read_text())["IoU"] == val_metrics["IoU"]  # same weights, same split
    assert len(list((tmp_path / "show").glob("*.png"))) == 6
    out = _cli("segproto.export", str(cfg_path), str(wd / "iter_2.pth"), str(tmp_path / "model.pth"))
    assert out.returncode == 0, out.stderr
    from segproto.export import load_exported

    model = load_exported(tmp_path / "model.pth")
    trained = load_checkpoint(wd / "iter_2.pth")["model"]
    exported = model.state_dict()
    assert set(exported) == {k[len("segmentor."):] for k in trained if k.startswith("segmentor.")}
    assert all(torch.equal(exported[k], trained["segmentor." + k]) for k in exported)
    img = next((tiny_root / "img_dir/val").glob("*.png"))
    out = _cli("segproto.infer", str(cfg_path), str(tmp_path / "model.pth"), str(img), "--out", str(tmp_path / "inf"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "inf" / f"{img.stem}_overlay.png").is_file()


def test_amp_bf16_on_cpu_and_tensorboard(tiny_cfg, tmp_path):
    cfg = tiny_cfg(iters=2, eval_interval=2, checkpoint_interval=2, amp=True, tensorboard=True)
    trainer = Trainer(cfg, tmp_path / "wd")
    dtypes = {True: set(), False: set()}  # conv output dtypes in training / in evaluation
    for mod in trainer.method.modules():
        if isinstance(mod, torch.nn.Conv2d):
            mod.register_forward_hook(lambda m, i, o: dtypes[m.training].add(o.dtype))
    metrics = trainer.run()
    assert dtypes == {True: {torch.bfloat16}, False: {torch.bfloat16}}  # bf16 autocast ran, in both
    assert metrics["mIoU"] == json.loads((tmp_path / "wd/metrics.json").read_text())["mIoU"]
    recs = [json.loads(ln) for ln in (tmp_path / "wd/scalars.jsonl").read_text().splitlines()]
    assert all(r["loss_ce"] == r["loss_ce"] for r in recs if r["mode"] == "train")  # finite, not NaN
    assert list((tmp_path / "wd/tb").glob("events.out.tfevents.*"))


def test_load_from_fine_tunes_with_grad_clip(tiny_cfg, tmp_path):
    Trainer(tiny_cfg(iters=2, eval_interval=2, checkpoint_interval=2), tmp_path / "src").run()
    src = load_checkpoint(tmp_path / "src/iter_2.pth")["model"]
    cfg = tiny_cfg(iters=2, eval_interval=2, checkpoint_interval=2, load_from=str(tmp_path / "src/iter_2.pth"))
    from segproto.config import apply_overrides, config_from_dict, config_to_dict

    cfg = config_from_dict(apply_overrides(config_to_dict(cfg), ["optim.grad_clip=0.5"]))
    trainer = Trainer(cfg, tmp_path / "ft")
    assert all(torch.equal(trainer.method.state_dict()[k], v) for k, v in src.items())  # weights loaded
    assert trainer.start_iter == 0  # weights only: a fresh schedule, not a resume
    metrics = trainer.run()
    assert metrics["mIoU"] == pytest.approx(_reference_miou(cfg, tmp_path / "ft/iter_2.pth"))
