"""End-to-end sweeps through ``python search/sweep.py`` on a local Ray (this 2-core machine)."""

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ray")
pytest.importorskip("optuna")

from search.space import apply_params  # noqa: E402
from segproto.config import config_from_dict, load_config  # noqa: E402
from segproto.config.yaml_io import read_yaml  # noqa: E402
from segproto.engine import Trainer, load_checkpoint  # noqa: E402
from tests.engine.conftest import REPO  # noqa: E402

SPACE = {"optim.lr": {"loguniform": [0.005, 0.05]}, "model.dropout": {"uniform": [0.0, 0.3]},
         "sched.warmup_iters": {"randint": [0, 2]}, "data.batch_size": {"choice": [2, 4]}}


def sweep(cfg: Path, space: Path, work_dir: Path, *options: str) -> list[str]:
    return [sys.executable, "search/sweep.py", str(cfg), "--space", str(space), "--num-samples", "3",
            "--work-dir", str(work_dir), *options]


def read_rows(work_dir: Path) -> list[dict]:
    with open(work_dir / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_three_trials_then_train_from_best_config(write_cfg, write_space, tmp_path):
    wd = tmp_path / "sweep"
    run = subprocess.run(sweep(write_cfg(iters=6), write_space(SPACE), wd), cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    rows = read_rows(wd)
    assert len(rows) == 3 and len({r["trial_id"] for r in rows}) == 3
    assert list(rows[0]) == ["trial_id", "status", "best_mIoU", "best_iter", "iterations", *SPACE]
    for r in rows:
        assert r["status"] in ("completed", "early_stopped")  # ASHA may stop a trial at iteration 3
        assert int(r["iterations"]) == (6 if r["status"] == "completed" else 3)
        assert 0 <= float(r["best_mIoU"]) <= 100 and int(r["best_iter"]) in (3, 6)
        assert 0.005 <= float(r["optim.lr"]) <= 0.05 and 0 <= float(r["model.dropout"]) <= 0.3
        assert r["sched.warmup_iters"] in ("0", "1", "2") and r["data.batch_size"] in ("2", "4")
    assert any(r["status"] == "completed" for r in rows)
    assert (wd / "mIoU_vs_params.png").stat().st_size > 0

    best = max(rows, key=lambda r: float(r["best_mIoU"]))
    assert f"best trial {best['trial_id']}" in run.stdout
    best_cfg = load_config(wd / "best_config.yaml")
    assert best_cfg.optim.lr == pytest.approx(float(best["optim.lr"]))
    assert (best_cfg.data.batch_size, best_cfg.sched.warmup_iters) == (int(best["data.batch_size"]),
                                                                      int(best["sched.warmup_iters"]))
    assert Path(best_cfg.data.root).is_absolute()

    out = tmp_path / "best_run"  # from another directory: the config holds absolute paths
    train = subprocess.run([sys.executable, "-m", "segproto.train", str(wd / "best_config.yaml"), "--work-dir",
                            str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-4000:]
    # the best trial's config retrained alone reproduces the mIoU the trial reported at its best
    # iteration (the same seeded run; a Ray worker may use another thread count: float rounding)
    vals = {r["iter"]: r["mIoU"] for r in map(json.loads, (out / "scalars.jsonl").read_text().splitlines())
            if r["mode"] == "val"}
    assert vals[int(best["best_iter"])] == pytest.approx(float(best["best_mIoU"]), abs=0.5)


def _trials(wd: Path) -> dict[str, list[Path]]:
    """Trial directory name -> its persisted checkpoint files."""
    return {d.name: sorted(d.glob("checkpoint_*/iter_*.pth")) for d in wd.glob("trial_*")}


def _second_trial_under_way(wd: Path, iters: int) -> bool:
    """One trial finished, another one past its first checkpoint (Tune has then registered that
    checkpoint: a function trial reports the next result only after Tune took the previous one)."""
    latest = [files[-1] for files in _trials(wd).values() if files]
    done = [f for f in latest if f.name == f"iter_{iters}.pth"]
    going = [f for f in latest if f.name != f"iter_{iters}.pth" and f.parent.name != "checkpoint_000000"]
    return bool(done and going)


def _interrupt_with_a_second_trial_under_way(cmd: list[str], wd: Path, iters: int, log: Path) -> Path:
    """Runs the sweep ``cmd`` and sends it Ctrl-C (SIGINT: Tune saves the experiment state and stops)
    once one trial finished and another is under way; it must exit 130. Returns its log."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 200
        while not _second_trial_under_way(wd, iters):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text()[-4000:]
    return log


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(write_cfg, write_space, tmp_path, one_thread):
    iters = 15
    cfg, space, wd = write_cfg(iters=iters), write_space(SPACE), tmp_path / "sweep"
    cmd = sweep(cfg, space, wd, "--max-concurrent", "1", "--scheduler", "fifo")
    log = _interrupt_with_a_second_trial_under_way(cmd, wd, iters, tmp_path / "first.log")
    assert "sweep interrupted; continue it with:" in log.read_text()
    before = read_rows(wd)
    finished = [r for r in before if r["status"] == "completed"]
    assert len(finished) == 1 and len(before) == 2
    done_dir = wd / f"trial_{finished[0]['trial_id']}"
    snapshot = {p: p.stat().st_mtime_ns for p in done_dir.rglob("*")}

    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds a sweep: add --resume" in again.stderr
    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]

    rows = {r["trial_id"]: r for r in read_rows(wd)}
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows.values())
    assert rows[finished[0]["trial_id"]] == finished[0]  # same row: not run again
    assert {p: p.stat().st_mtime_ns for p in done_dir.rglob("*") if "checkpoint_" in str(p)} == {
        p: t for p, t in snapshot.items() if "checkpoint_" in str(p)}
    [interrupted] = [r for r in before if r["status"] == "unfinished"]
    at = re.findall(r"resumed from \S+ at iteration (\d+)", resumed.stdout + resumed.stderr)
    assert len(at) == 1 and 3 <= int(at[0]) < iters  # the interrupted trial went on from its checkpoint

    # ... and ended exactly where an uninterrupted run of the same values ends (one thread, as in the trial).
    trial_dir = wd / f"trial_{interrupted['trial_id']}"
    params = json.loads((trial_dir / "params.json").read_text())
    base = read_yaml(str(wd / "sweep_base.yaml"))
    Trainer(config_from_dict(apply_params(base, params)), tmp_path / "reference").run()
    [final] = trial_dir.glob(f"checkpoint_*/iter_{iters}.pth")
    want, got = load_checkpoint(tmp_path / "reference" / f"iter_{iters}.pth")["model"], load_checkpoint(final)["model"]
    assert all(torch.equal(want[k], got[k]) for k in want)


def _rung_reports(wd: Path, rung: int) -> list[tuple[float, str, float]]:
    """``(time, trial id, mIoU)`` of each trial's first report at or past iteration ``rung``, in time order."""
    out = []
    for d in wd.glob("trial_*"):
        with open(d / "progress.csv") as f:
            first = next((r for r in csv.DictReader(f) if r["mIoU"] and int(float(r["iter"])) >= rung), None)
        if first is not None:
            out.append((float(first["timestamp"]), d.name.removeprefix("trial_"), float(first["mIoU"])))
    return sorted(out)


@pytest.mark.slow
def test_resumed_asha_sweep_decides_as_an_uninterrupted_one(write_cfg, write_space, tmp_path, one_thread):
    """Ray Tune forgets the scheduler's rungs on ``--resume``; ``search.asha`` restores them from the
    trials' ``progress.csv``. Oracle: ASHA replayed by hand on every trial's rung report in time order
    (stopped iff below the median of the earlier rung scores), the same as in one uninterrupted sweep."""
    iters, rung = 15, 9
    cfg, space, wd = write_cfg(iters=iters), write_space(SPACE), tmp_path / "sweep"
    cmd = sweep(cfg, space, wd, "--max-concurrent", "1", "--grace-period", str(rung))
    _interrupt_with_a_second_trial_under_way(cmd, wd, iters, tmp_path / "first.log")
    before = _rung_reports(wd, rung)
    assert before  # the finished trial passed the rung before the interrupt

    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    for _, tid, miou in before:
        assert f"ASHA: trial {tid}: rung scores restored mIoU {miou:.4f} at iter {rung}" in resumed.stdout

    rows = {r["trial_id"]: r for r in read_rows(wd)}
    assert len(rows) == 3
    seen: list[float] = []
    for _, tid, miou in _rung_reports(wd, rung):
        stop = bool(seen) and miou < float(np.nanpercentile(seen, 50))
        assert rows[tid]["status"] == ("early_stopped" if stop else "completed"), (tid, miou, seen)
        seen.append(miou)


def test_resume_needs_an_interrupted_sweep(write_cfg, write_space, tmp_path, capsys):
    from search.sweep import main

    wd = tmp_path / "sweep"
    assert main([str(write_cfg()), "--space", str(write_space(SPACE)), "--num-samples", "2", "--work-dir", str(wd),
                 "--resume"]) == 2
    assert f"--resume: no sweep to resume in {wd}" in capsys.readouterr().err
    assert not wd.exists()


def test_trial_continues_from_the_checkpoint_tune_hands_back(tiny_cfg, tmp_path, monkeypatch, one_thread):
    """``run_trial`` outside Ray: Tune's session calls are replaced by fakes."""
    from ray import tune

    from search.sweep import trial_base
    from search.trial import run_trial
    from segproto.config import config_to_dict

    base = trial_base(config_to_dict(tiny_cfg()))  # 6 iterations, evaluations at 3 and 6
    full = tmp_path / "full"
    Trainer(config_from_dict(dict(base, train=dict(base["train"], max_keep_ckpts=-1))), full).run()
    reports, restored = [], tmp_path / "restored"
    restored.mkdir()

    def report(result, checkpoint=None):
        reports.append((result["iter"], sorted(p.name for p in Path(checkpoint.path).iterdir())))

    monkeypatch.setattr(tune, "get_context", lambda: type("Ctx", (), {"get_trial_id": lambda self: "t0"})())
    monkeypatch.setattr(tune, "report", report)
    for ckpt, want in (("iter_3.pth", [(6, ["iter_6.pth"])]), ("iter_6.pth", [])):
        (restored / ckpt).write_bytes((full / ckpt).read_bytes())
        monkeypatch.setattr(tune, "get_checkpoint", lambda c=ckpt: tune.Checkpoint.from_directory(restored))
        work = tmp_path / f"work_{ckpt}"
        work.mkdir()
        monkeypatch.chdir(work)
        reports.clear()
        run_trial({}, base)
        assert reports == want  # from iteration 3: one more report; from the last one: nothing to do
        assert not list(work.glob("*.pth"))  # the reported checkpoint went to Tune; no copy stays
        (restored / ckpt).unlink()
    assert json.loads((tmp_path / "work_iter_3.pth" / "metrics.json").read_text())["IoU"] == \
        json.loads((full / "metrics.json").read_text())["IoU"]


def _fake_tune_session(monkeypatch, tmp_path: Path, handed: Path, report) -> Path:
    """Tune's session calls for ``run_trial`` outside Ray: trial ``t0``, ``report`` as ``tune.report``,
    the checkpoint folder ``handed`` as what Tune hands back; returns the trial's working directory."""
    from ray import tune

    monkeypatch.setattr(tune, "get_context", lambda: type("Ctx", (), {"get_trial_id": lambda self: "t0"})())
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint(path=str(handed)))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("handed", ["emptied", "gone", "truncated"])
def test_trial_resumes_from_the_newer_checkpoint_when_tunes_is_broken(tiny_cfg, tmp_path, monkeypatch, one_thread,
                                                                       handed):
    """Tune deletes a trial's older checkpoint when it registers a newer one and records that only at
    its next snapshot, so a sweep killed in between hands back a broken folder. The trial goes on
    from the newer folder beside it, reports that checkpoint's evaluation again (Tune's history
    lacks it), and ends with exactly the reports and weights of an uninterrupted run."""
    from search.sweep import trial_base
    from search.trial import run_trial
    from segproto.config import config_to_dict

    base = trial_base(config_to_dict(tiny_cfg()))  # 6 iterations, evaluations at 3 and 6
    full, want = tmp_path / "full", []
    Trainer(config_from_dict(dict(base, train=dict(base["train"], max_keep_ckpts=-1))), full,
            on_eval=lambda it, m, ckpt: want.append((it, m["mIoU"], m["aAcc"], m["mAcc"], [f"iter_{it}.pth"]))).run()
    trial = tmp_path / "storage" / "trial_t0"
    older, newer = trial / "checkpoint_000000", trial / "checkpoint_000001"
    newer.mkdir(parents=True)
    (newer / "iter_3.pth").write_bytes((full / "iter_3.pth").read_bytes())
    if handed != "gone":
        older.mkdir()
    if handed == "truncated":
        (older / "iter_3.pth").write_bytes((full / "iter_3.pth").read_bytes()[:1000])
    got = []

    def report(result, checkpoint=None):
        got.append((result["iter"], result["mIoU"], result["aAcc"], result["mAcc"],
                    sorted(p.name for p in Path(checkpoint.path).iterdir())))

    work = _fake_tune_session(monkeypatch, tmp_path, older, report)
    run_trial({}, base)
    assert got == want  # iteration 3 reported again with the same numbers, then 6 as in the full run
    final = json.loads((work / "metrics.json").read_text())
    assert final["IoU"] == json.loads((full / "metrics.json").read_text())["IoU"]
    assert not list(work.glob("*.pth"))


def test_trial_starts_over_when_no_checkpoint_of_tunes_is_complete(tiny_cfg, tmp_path, monkeypatch, one_thread):
    """A handed-back folder that is gone, with no newer one beside it: the trial trains from the
    start (seeded, so its reports equal an uninterrupted run's)."""
    from search.sweep import trial_base
    from search.trial import run_trial
    from segproto.config import config_to_dict

    base = trial_base(config_to_dict(tiny_cfg()))
    want, got = [], []
    Trainer(config_from_dict(base), tmp_path / "full",
            on_eval=lambda it, m, ckpt: want.append((it, m["mIoU"]))).run()
    _fake_tune_session(monkeypatch, tmp_path, tmp_path / "storage" / "trial_t0" / "checkpoint_000000",
                       lambda result, checkpoint=None: got.append((result["iter"], result["mIoU"])))
    run_trial({}, base)
    assert got == want
