"""scripts/fewshot.py's run bookkeeping: resume, restart, and what each record carries."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _fewshot():
    spec = importlib.util.spec_from_file_location("fewshot", REPO / "scripts" / "fewshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_training(calls):
    """Stands in for a training subprocess: records the command, then writes what a run leaves."""
    def run(cmd, log, threads, append=False):
        calls.append((cmd, log, threads, append))
        wd = Path(cmd[cmd.index("--work-dir") + 1])
        (wd / "last_checkpoint").write_text("iter_10.pth")
        (wd / "metrics.json").write_text(json.dumps({"mIoU": 1.0}))
    return run


def test_train_starts_resumes_and_restarts(tmp_path, monkeypatch):
    fs = _fewshot()
    calls = []
    study = fs.train_run.__globals__  # scripts/study.py, which runs the trainings of both scripts
    monkeypatch.setitem(study, "run_logged", _fake_training(calls))
    monkeypatch.setitem(study, "git_commit", lambda: "abc123")

    fresh = tmp_path / "fresh"
    fs._train("c.yaml", fresh, ["seed=1"], 1)
    cmd, log, threads, append = calls[-1]
    assert log == tmp_path / "fresh.log"
    assert "--resume" not in cmd and "--force" not in cmd and not append and threads == 1
    assert cmd[cmd.index("--cfg-options") + 1:] == ["seed=1", "train.progress_bar=false"]
    assert (fresh / "commit.txt").read_text() == "abc123\n" and (fresh / "threads.txt").read_text() == "1\n"
    assert float((fresh / "wall_s.txt").read_text()) >= 0

    fs._train("c.yaml", fresh, ["seed=1"], 1)  # finished: not trained again
    assert len(calls) == 1

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / "last_checkpoint").write_text("iter_5.pth")
    (interrupted / "commit.txt").write_text("first\n")
    fs._train("c.yaml", interrupted, [], 2)
    cmd, _, _, append = calls[-1]
    assert "--resume" in cmd and append
    assert (interrupted / "commit.txt").read_text() == "first\n"  # the run keeps the commit it started at

    early = tmp_path / "early"  # stopped before its first checkpoint
    early.mkdir()
    (early / "scalars.jsonl").write_text("{}\n")
    fs._train("c.yaml", early, [], 1)
    assert "--force" in calls[-1][0] and "--resume" not in calls[-1][0]


def test_study_record_carries_commit_threads_and_wall(tmp_path, monkeypatch):
    fs = _fewshot()
    monkeypatch.setattr(fs, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(fs, "STUDIES", tmp_path / "studies")
    run = tmp_path / "results" / "distill_fold2_s1"
    run.mkdir(parents=True)
    for k in fs.SHOTS:
        (run / f"test_{k}shot.json").write_text(json.dumps({"mIoU": 10.0 + k, "FB-IoU": 50.0}))
    (run / "commit.txt").write_text("abc123\n")
    (run / "threads.txt").write_text("1\n")
    (run / "wall_s.txt").write_text("12.5\n")
    # resumed once: 30 s in the first process (kept in the checkpoint) + 12.5 s in the last
    (run / "metrics.json").write_text(json.dumps({"mIoU": 40.0, "train_seconds": 42.5, "process_seconds": 12.5}))
    prior = tmp_path / "results" / "prior_fold2"  # no training: no run info
    prior.mkdir()
    for k in fs.SHOTS:
        (prior / f"test_{k}shot.json").write_text(json.dumps({"mIoU": 3.0, "FB-IoU": 40.0}))
    data = json.loads(fs.write_study().read_text())
    by_variant = {r["variant"]: r for r in data["runs"]}
    d = by_variant["distill"]
    assert (d["fold"], d["seed"], d["commit"], d["threads"], d["wall_s"]) == (2, 1, "abc123", 1, 12.5)
    assert d["train_seconds"] == 42.5 and "train_seconds_partial" not in d
    assert d["metrics"]["mIoU_1shot"] == 11.0 and d["metrics"]["mIoU_5shot"] == 15.0
    p = by_variant["prior_only"]
    assert (p["fold"], p["seed"], p["commit"], p["threads"]) == (2, None, None, None) and "stage_one" not in p
    assert "train_seconds" not in p
    again = tmp_path / "results" / "retrained" / "prior_fold2"  # the floor of a stage one trained again
    again.mkdir(parents=True)
    for k in fs.SHOTS:
        (again / f"test_{k}shot.json").write_text(json.dumps({"mIoU": 5.0, "FB-IoU": 41.0}))
    (again / "machine.json").write_text(json.dumps([{"cpu": "B"}]))
    floors = [r for r in json.loads(fs.write_study().read_text())["runs"] if r["variant"] == "prior_only"]
    assert [(r["metrics"]["mIoU_1shot"], r.get("stage_one"), r.get("machine")) for r in floors] == [
        (3.0, None, None), (5.0, "retrained", [{"cpu": "B"}])]


def test_bad_job_or_thread_counts_are_refused(capsys):
    fs = _fewshot()
    with pytest.raises(SystemExit) as e:
        fs.main(["--threads", "0"])
    assert e.value.code == 2
    assert "--threads" in capsys.readouterr().err
