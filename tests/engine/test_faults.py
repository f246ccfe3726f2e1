"""Fault injection (slow tier): ``kill -9`` at seeded random moments of training, evaluation and
checkpoint writes; then ``--resume`` (or, when no checkpoint was written yet, a ``--force`` restart)
must finish with exactly the uninterrupted run's weights and metrics, and leave no temp file.
A save that runs out of disk space (a small tmpfs) keeps the previous checkpoint.

``SEGPROTO_FAULT_KILLS`` sets the kills per phase (default 3 here; 20 for the full tier)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from segproto.engine import load_checkpoint
from tests.engine.conftest import REPO, tiny_cfg_dict

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("SEGPROTO_FAULT_KILLS", "3"))
TRAIN = {"iters": 6, "eval_interval": 2, "checkpoint_interval": 2, "log_interval": 1, "max_keep_ckpts": 2}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _train(*args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segproto.train", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=300)


def _outcome(wd: Path) -> dict:
    """What must not depend on a kill: the final weights, the metrics, the logged losses and mIoU."""
    metrics = json.loads((wd / "metrics.json").read_text())
    recs = [json.loads(ln) for ln in (wd / "scalars.jsonl").read_text().splitlines()]
    logged = [{k: v for k, v in r.items() if k not in ("time", "data_time", "memory_mb")} for r in recs]
    return {"metrics": {k: metrics[k] for k in ("aAcc", "mIoU", "mAcc", "IoU", "Acc", "levels", "best")},
            "scalars": logged, "model": load_checkpoint(wd / "iter_6.pth")["model"],
            "files": sorted(p.name for p in wd.iterdir() if p.suffix in (".pth", "") or p.name.startswith("."))}


@pytest.fixture(scope="module")
def setup(tiny_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    cfg = base / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_cfg_dict(tiny_root, **TRAIN)))
    out = _train(cfg, "--work-dir", base / "reference")
    assert out.returncode == 0, out.stderr[-3000:]
    return cfg, _outcome(base / "reference"), base


@pytest.mark.parametrize("phase", ["train", "eval", "save"])
def test_kill_9_then_resume_is_exact(setup, phase):
    cfg, want, base = setup
    for seed in range(KILLS):
        wd = base / f"{phase}_{seed}"
        child = subprocess.run([sys.executable, str(REPO / "tests/engine/fault_child.py"), cfg, wd, phase, str(seed)],
                               capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
        assert child.returncode == -9, (phase, seed, child.returncode, child.stderr[-2000:])
        has_ckpt = any(wd.glob("iter_*.pth"))
        out = _train(cfg, "--work-dir", wd, "--resume" if has_ckpt else "--force")
        assert out.returncode == 0, (phase, seed, out.stderr[-3000:])
        got = _outcome(wd)
        assert got["metrics"] == want["metrics"], (phase, seed)
        assert got["scalars"] == want["scalars"], (phase, seed)
        assert all(torch.equal(got["model"][k], v) for k, v in want["model"].items()), (phase, seed)
        assert got["files"] == want["files"], (phase, seed)  # the same checkpoints; no temp file survives
        shutil.rmtree(wd)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm and a tmpfs mount (user namespaces)")
def test_a_save_that_runs_out_of_space_keeps_the_previous_checkpoint(setup, tmp_path):
    cfg, want, _ = setup
    size = (setup[2] / "reference" / "iter_6.pth").stat().st_size
    wd = tmp_path / "small"
    wd.mkdir()
    check = tmp_path / "check.py"
    check.write_text(
        "import json, sys, torch\nfrom pathlib import Path\nwd = Path(sys.argv[1])\n"
        "s = torch.load(wd / 'iter_1.pth', weights_only=True)\n"
        "print(json.dumps({'files': sorted(p.name for p in wd.iterdir()), 'iter': s['meta']['iter'],"
        " 'marker': (wd / 'last_checkpoint').read_text()}))\n")
    # room for one checkpoint and a half: iteration 1 saves, iteration 2's save runs out of space
    script = (f"mount -t tmpfs -o size={int(size * 1.5)} tmpfs {wd} && "
              f"{sys.executable} -m segproto.train {cfg} --work-dir {wd} --cfg-options train.iters=3 "
              f"train.checkpoint_interval=1 train.eval_interval=3 2> {tmp_path / 'err.txt'}; "
              f"echo rc=$?; {sys.executable} {check} {wd}")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=REPO, env=ENV,
                         timeout=300)
    err = (tmp_path / "err.txt").read_text()
    assert "rc=1" in out.stdout, (out.stdout, err[-3000:])
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot save checkpoint" in err and "iter_2.pth: no space left on device" in err
    assert "the latest checkpoint is still" in err and "iter_1.pth" in err
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state["iter"] == 1 and state["marker"] == "iter_1.pth"
    assert state["files"] == ["config.yaml", "iter_1.pth", "last_checkpoint", "scalars.jsonl", "train.log"]  # no temp left
