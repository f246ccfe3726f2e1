"""Fault injection in a sweep (slow tier): ``kill -9`` of ``search/sweep.py`` at a seeded moment of a
2-trial FIFO sweep on a local Ray, the Ray processes it leaves killed too (what ``ray stop`` does),
then the same command with ``--resume`` (a plain rerun when Tune had not stored the experiment yet).
The resumed sweep must finish with exactly the trials, reports, final weights and ``results.csv``
of one uninterrupted sweep of the same config, and no temporary or partial file in its directory.

A second test lands the kill where Tune has deleted a trial's older checkpoint but not yet recorded
the newer one (``sweep_killed_after_delete.py``).

``SEGPROTO_FAULT_KILLS`` sets the number of kills (default 1 here, as each costs a Ray start and a
resume, about 50 s; 20 for the full tier).
"""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("ray")
pytest.importorskip("optuna")

from segproto.engine import load_checkpoint  # noqa: E402
from tests.engine.conftest import REPO, tiny_cfg_dict  # noqa: E402
from tests.engine.ray_procs import private_ray_tmp, processes_using  # noqa: E402

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("SEGPROTO_FAULT_KILLS", "1"))
ITERS = 6  # evaluations and Tune checkpoints at 2, 4, 6; num_to_keep 1 keeps the best and the latest: one goes
TIMEOUT_S = 300


def _command(cfg: Path, space: Path, wd: Path, *extra: str) -> list[str]:
    return [sys.executable, "search/sweep.py", str(cfg), "--space", str(space), "--num-samples", "2", "--work-dir",
            str(wd), "--scheduler", "fifo", "--max-concurrent", "2", "--cpus-per-trial", "1", *extra]


def _env(ray_tmp: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": ray_tmp}


def _stored(wd: Path) -> bool:
    """Tune has written the experiment state (what ``--resume`` restores)."""
    return any(wd.glob("experiment_state-*.json"))


def _kill_ray(ray_tmp: str) -> None:
    """SIGKILL every process of the sweep's private Ray until none is left."""
    deadline = time.monotonic() + 60
    while left := processes_using(ray_tmp):
        assert time.monotonic() < deadline, f"Ray processes do not die: {left}"
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


def _outcome(wd: Path) -> dict:
    """What must not depend on a kill, per trial (keyed by its sampled values): every report's
    metrics by iteration, the last report, the latest checkpoint's weights; and ``results.csv``
    without the (random) trial ids."""
    trials = {}
    for d in sorted(wd.glob("trial_*")):
        key = json.dumps(json.loads((d / "params.json").read_text()), sort_keys=True)
        reports = [json.loads(line) for line in (d / "result.json").read_text().splitlines() if line.strip()]
        by_iter = {}
        for r in reports:
            metrics = {k: r[k] for k in ("mIoU", "aAcc", "mAcc")}
            assert by_iter.setdefault(r["iter"], metrics) == metrics, (d, r["iter"])  # a repeated report agrees
        [latest] = sorted(d.glob(f"checkpoint_*/iter_{ITERS}.pth"))
        assert key not in trials, f"two trials with the values {key}"
        trials[key] = {"reports": by_iter, "last": {k: reports[-1][k] for k in ("iter", "mIoU", "aAcc", "mAcc")},
                       "model": load_checkpoint(latest)["model"]}
    with open(wd / "results.csv") as f:
        rows = sorted(({k: v for k, v in r.items() if k != "trial_id"} for r in csv.DictReader(f)),
                      key=lambda r: r["optim.lr"])
    return {"trials": trials, "rows": rows}


def _leftovers(wd: Path) -> list[str]:
    """Temporary files, and checkpoint folders that do not hold exactly one loadable ``iter_N.pth``."""
    bad = [str(p) for p in wd.rglob("*") if ".tmp" in p.name or "tmp-" in p.name
           or (p.name.startswith(".") and p.name != ".validate_storage_marker")]
    for ckpt_dir in wd.glob("trial_*/checkpoint_*"):
        files = list(ckpt_dir.iterdir())
        if len(files) != 1 or not files[0].name.startswith("iter_"):
            bad.append(f"{ckpt_dir}: {[f.name for f in files]}")
            continue
        try:
            load_checkpoint(files[0])
        except (RuntimeError, OSError, ValueError) as exc:
            bad.append(f"{files[0]}: {exc}")
    return bad


def _assert_same_outcome(wd: Path, want: dict, tag) -> None:
    """The resumed sweep in ``wd`` ends as the uninterrupted one: the same trials (none lost, none run
    twice as a new trial), reports, last reports and final weights, and no leftover file."""
    got = _outcome(wd)
    assert got["rows"] == want["rows"], tag
    assert got["trials"].keys() == want["trials"].keys(), tag
    for key, trial in want["trials"].items():
        assert got["trials"][key]["reports"] == trial["reports"], (tag, key)
        assert got["trials"][key]["last"] == trial["last"], (tag, key)
        model = got["trials"][key]["model"]
        assert all(torch.equal(model[k], v) for k, v in trial["model"].items()), (tag, key)
    assert not _leftovers(wd), tag


@pytest.fixture(scope="module")
def reference(tiny_root, tmp_path_factory):
    """The config, the space, the uninterrupted sweep's outcome, and the seconds from Tune's first
    stored state to the end of that sweep (the span the kills are drawn from)."""
    base = tmp_path_factory.mktemp("sweep_faults")
    cfg, space, wd = base / "cfg.yaml", base / "space.yaml", base / "reference"
    cfg.write_text(yaml.safe_dump(tiny_cfg_dict(tiny_root, iters=ITERS, eval_interval=2, log_interval=1)))
    space.write_text(yaml.safe_dump({"optim.lr": {"loguniform": [0.005, 0.05]}}))
    with private_ray_tmp() as ray_tmp, open(base / "reference.log", "w") as log:
        proc = subprocess.Popen(_command(cfg, space, wd), cwd=REPO, env=_env(ray_tmp), stdout=log,
                                stderr=subprocess.STDOUT)
        while not _stored(wd) and proc.poll() is None:
            time.sleep(0.1)
        stored_at = time.monotonic()
        assert proc.wait(timeout=TIMEOUT_S) == 0, (base / "reference.log").read_text()[-4000:]
        span = time.monotonic() - stored_at
    want = _outcome(wd)
    assert len(want["trials"]) == 2 and all(r["status"] == "completed" for r in want["rows"])
    assert not _leftovers(wd)
    return cfg, space, want, span, base


@pytest.mark.parametrize("seed", range(KILLS))
def test_kill_9_during_a_sweep_then_resume_is_exact(reference, seed):
    cfg, space, want, span, base = reference
    wd, log_path = base / f"kill_{seed}", base / f"kill_{seed}.log"
    delay = random.Random(seed).uniform(0.0, 0.7 * span)  # after Tune's first stored state
    with private_ray_tmp() as ray_tmp:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(_command(cfg, space, wd), cwd=REPO, env=_env(ray_tmp), stdout=log,
                                    stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + TIMEOUT_S
                while not _stored(wd) and proc.poll() is None:
                    assert time.monotonic() < deadline, log_path.read_text()[-4000:]
                    time.sleep(0.05)
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.kill()
                proc.wait()
            finally:
                _kill_ray(ray_tmp)
        resume = ["--resume"] if _stored(wd) else []
        out = subprocess.run(_command(cfg, space, wd, *resume), cwd=REPO, env=_env(ray_tmp), capture_output=True,
                             text=True, timeout=TIMEOUT_S)
    assert proc.returncode == -9, (seed, proc.returncode, log_path.read_text()[-4000:])  # killed, not finished
    assert out.returncode == 0, (seed, (out.stdout + out.stderr)[-4000:])
    _assert_same_outcome(wd, want, seed)


def test_kill_9_after_tune_deleted_an_older_checkpoint_then_resume_is_exact(reference):
    """The resumed trial gets back a folder Tune emptied: it goes on from the newer checkpoint beside it."""
    cfg, space, want, _, base = reference
    wd, log_path = base / "kill_after_delete", base / "kill_after_delete.log"
    command = _command(cfg, space, wd)
    with private_ray_tmp() as ray_tmp:
        with open(log_path, "w") as log:
            proc = subprocess.run([sys.executable, str(Path(__file__).with_name("sweep_killed_after_delete.py")),
                                   *command[1:]], cwd=REPO, env=_env(ray_tmp), stdout=log, stderr=subprocess.STDOUT,
                                  timeout=TIMEOUT_S)
        _kill_ray(ray_tmp)
        assert proc.returncode == -9 and _stored(wd), log_path.read_text()[-4000:]
        emptied = [d for d in wd.glob("trial_*/checkpoint_*") if not any(d.iterdir())]
        assert len(emptied) == 1, emptied
        out = subprocess.run(_command(cfg, space, wd, "--resume"), cwd=REPO, env=_env(ray_tmp), capture_output=True,
                             text=True, timeout=TIMEOUT_S)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    _assert_same_outcome(wd, want, "after delete")
