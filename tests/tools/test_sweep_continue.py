"""``scripts/sweep_continue.py``: an early-stopped trial trained on outside Tune ends exactly where an
uninterrupted run of the same values ends, and its record holds what the docs quote."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from search.space import apply_params
from segproto.config import config_from_dict, config_to_dict, load_config
from segproto.engine import Trainer, load_checkpoint
from tests.engine.conftest import tiny_cfg_dict, tiny_root  # noqa: F401  (tiny_root: fixture)

REPO = Path(__file__).resolve().parents[2]
ITERS = 6


def _script():
    spec = importlib.util.spec_from_file_location("sweep_continue", REPO / "scripts" / "sweep_continue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_sweep(tmp_path, tiny_root, iters=ITERS):
    """A sweep folder as search/sweep.py leaves it for a trial stopped at iteration 3: the trial
    config's ``sweep_base.yaml``, the trial's ``params.json``, ``progress.csv`` and its Tune checkpoint."""
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_cfg_dict(tiny_root, iters=iters)))
    base = config_to_dict(load_config(cfg_file))
    sweep = tmp_path / "sweep"
    trial = sweep / "trial_abc123"
    (trial / "checkpoint_000000").mkdir(parents=True)
    (sweep / "sweep_base.yaml").write_text(yaml.safe_dump(base))
    params = {"optim.lr": 0.02}
    (trial / "params.json").write_text(json.dumps(params))
    stopped = tmp_path / "stopped"
    evals = []
    Trainer(config_from_dict(apply_params(base, params)), stopped,
            on_eval=lambda it, m, _c: evals.append((it, m))).run()
    (trial / "checkpoint_000000" / "iter_3.pth").write_bytes((stopped / "iter_3.pth").read_bytes())
    with open(trial / "progress.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iter", "mIoU", "aAcc", "mAcc", "training_iteration"])
        it, m = evals[0]
        w.writerow([it, m["mIoU"], m["aAcc"], m["mAcc"], 1])
    return sweep, stopped, evals


def test_continued_trial_matches_the_uninterrupted_run_and_is_recorded(tmp_path, tiny_root):
    sweep, full, evals = _fake_sweep(tmp_path, tiny_root)  # `full` trained all ITERS iterations
    out = tmp_path / "records"
    ckpt = sweep / "trial_abc123" / "checkpoint_000000" / "iter_3.pth"
    before = ckpt.read_bytes()
    assert _script().main([str(sweep), "abc123", "--out", str(out)]) == 0

    got = load_checkpoint(sweep / "continued" / "trial_abc123" / f"iter_{ITERS}.pth")["model"]
    want = load_checkpoint(full / f"iter_{ITERS}.pth")["model"]
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert ckpt.read_bytes() == before  # the sweep's own checkpoint is left as it was

    record = json.loads((out / "abc123.json").read_text())
    assert record["params"] == {"optim.lr": 0.02} and record["train_iters"] == ITERS and record["seed"] == 3
    assert [r["iter"] for r in record["tune_history"]] == [3]
    assert record["tune_history"][0]["mIoU"] == evals[0][1]["mIoU"]
    assert [(r["iter"], r["mIoU"]) for r in record["continuation"]] == [(it, m["mIoU"]) for it, m in evals[1:]]

    assert _script().main([str(sweep), "abc123", "--out", str(out)]) == 0  # a rerun skips the recorded trial


def test_twice_interrupted_continuation_keeps_every_evaluation(tmp_path, tiny_root, monkeypatch):
    """Stopped by Ctrl-C right after its evaluation at iteration 6, the continuation resumes from its
    own checkpoint there, and the record still holds that evaluation beside the one at 9."""
    import segproto.engine

    iters = 9
    sweep, full, evals = _fake_sweep(tmp_path, tiny_root, iters=iters)
    assert [it for it, _ in evals] == [3, 6, 9]
    out = tmp_path / "records"

    class StoppedAfterSix(Trainer):
        def __init__(self, *args, on_eval, **kwargs):
            def stop(it, metrics, ckpt):
                on_eval(it, metrics, ckpt)
                if it == 6:
                    raise KeyboardInterrupt
            super().__init__(*args, on_eval=stop, **kwargs)

    monkeypatch.setattr(segproto.engine, "Trainer", StoppedAfterSix)
    with pytest.raises(KeyboardInterrupt):
        _script().main([str(sweep), "abc123", "--out", str(out)])
    assert not (out / "abc123.json").exists()
    monkeypatch.setattr(segproto.engine, "Trainer", Trainer)
    assert _script().main([str(sweep), "abc123", "--out", str(out)]) == 0

    record = json.loads((out / "abc123.json").read_text())
    assert [(r["iter"], r["mIoU"]) for r in record["continuation"]] == [(it, m["mIoU"]) for it, m in evals[1:]]
    got = load_checkpoint(sweep / "continued" / "trial_abc123" / f"iter_{iters}.pth")["model"]
    want = load_checkpoint(full / f"iter_{iters}.pth")["model"]
    assert all(torch.equal(got[k], want[k]) for k in want)
