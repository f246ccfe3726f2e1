"""Study result files and the tables generated from them (scripts/study.py, scripts/study_tables.py)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _script("study_tables")
study = _script("study")


def test_docs_tables_match_the_result_files():
    assert tables.main(["--check"]) == 0


def test_every_result_file_has_the_documented_shape():
    files = sorted((REPO / "benchmarks" / "results" / "studies").glob("*.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text())
        assert path.stem == f"{data['regime']}_{data['study']}"
        assert data["runs"], path
        for run in data["runs"]:
            assert {"variant", "seed", "config", "metrics"} <= run.keys(), (path, run)
            assert (REPO / run["config"]).is_file() or run["config"].startswith("work_dirs"), run["config"]
        if data["study"] != "hdmnet":
            assert any(r["variant"] == "ce" for r in data["runs"]), path
            for run in data["runs"]:
                assert {"mIoU", "aAcc", "mAcc"} <= run["metrics"].keys(), (path, run)


def test_paired_interval_against_hand_computation():
    # diffs 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653; half width 4.302653 / sqrt(3) = 2.484138
    assert tables.paired([1.0, 2.0, 3.0]) == "+2.00 [-0.48, +4.48]"
    # diffs 1.0, 1.2, 1.1: mean 1.1, sd 0.1, half 4.302653 * 0.1 / sqrt(3) = 0.248414 -> excludes 0
    assert tables.paired([1.0, 1.2, 1.1]) == "+1.10 [+0.85, +1.35]*"
    assert tables.paired([0.5]) == "+0.50 (1 pair)"
    assert math.isclose(tables.t975(2), 4.302652729, rel_tol=1e-8)


def test_table_pairs_by_seed_not_by_order():
    runs = [{"variant": "ce", "seed": s, "metrics": {"mIoU": v, "aAcc": 90.0, "mAcc": 50.0}}
            for s, v in ((0, 10.0), (1, 20.0))]
    runs += [{"variant": "x", "seed": s, "metrics": {"mIoU": v, "aAcc": 90.0, "mAcc": 50.0}}
             for s, v in ((1, 21.0), (0, 11.0))]
    text = tables.table({"study": "pico", "regime": "r", "runs": runs})
    row = next(line for line in text.splitlines() if line.startswith("| x "))
    assert "+1.00 [+1.00, +1.00]*" in row  # both pairs differ by exactly +1


def test_study_records_a_finished_run(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", tmp_path / "work")
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    wd = study._work_dir("pretrained128", "pico", "ce", 1)
    wd.mkdir(parents=True)
    (wd / "metrics.json").write_text(json.dumps({
        "aAcc": 80.0, "mIoU": 40.0, "mAcc": 50.0, "IoU": [40.0], "classes": ["a"],
        "levels": {"fine": {"aAcc": 80.0, "mIoU": 40.0, "mAcc": 50.0},
                   "coarse": {"aAcc": 90.0, "mIoU": 60.0, "mAcc": 70.0}}}))
    (wd / "commit.txt").write_text("abc\n")
    (wd / "threads.txt").write_text("1\n")
    (wd / "machine.json").write_text(json.dumps([{"cpu": "A", "torch_cpu_capability": "AVX2"}]))
    path = study.write_results("pretrained128", "pico")
    data = json.loads(path.read_text())
    assert path.name == "pretrained128_pico.json"
    assert data["runs"] == [{
        "variant": "ce", "seed": 1, "config": "configs/pretrained128/ce.yaml", "overrides": [], "threads": 1,
        "wall_s": None, "commit": "abc", "machine": [{"cpu": "A", "torch_cpu_capability": "AVX2"}],
        "metrics": {"aAcc": 80.0, "mIoU": 40.0, "mAcc": 50.0, "aAcc_fine": 80.0, "mIoU_fine": 40.0,
                    "mAcc_fine": 50.0, "aAcc_coarse": 90.0, "mIoU_coarse": 60.0, "mAcc_coarse": 70.0,
                    "IoU": [40.0], "classes": ["a"]}}]


def test_record_takes_train_seconds_only_where_the_trainer_added_them_up(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", tmp_path / "work")
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    base = {"aAcc": 80.0, "mIoU": 40.0, "mAcc": 50.0}
    cases = {0: {"train_seconds": 123.0},  # older trainer: the last process's time only
             1: {"train_seconds": 900.04, "process_seconds": 300.0},
             2: {"train_seconds": 300.0, "process_seconds": 300.0, "train_seconds_partial": True}}
    for seed, times in cases.items():
        wd = study._work_dir("pretrained128", "pico", "ce", seed)
        wd.mkdir(parents=True)
        (wd / "metrics.json").write_text(json.dumps({**base, **times}))
    runs = json.loads(study.write_results("pretrained128", "pico").read_text())["runs"]
    got = {r["seed"]: {k: r[k] for k in ("train_seconds", "train_seconds_partial") if k in r} for r in runs}
    assert got == {0: {}, 1: {"train_seconds": 900.0}, 2: {"train_seconds": 300.0, "train_seconds_partial": True}}


def test_shared_ce_run_is_one_training():
    assert study._work_dir("pretrained128", "pico", "ce", 0) == study._work_dir("pretrained128", "hiposeg", "ce", 0)
    assert study._work_dir("pretrained128", "prcl", "ce", 0) != study._work_dir("pretrained128", "pico", "ce", 0)


@pytest.mark.parametrize("regime", sorted(study.STUDIES))
def test_study_configs_load(regime):
    from segproto.config import load_config

    for variants in study.STUDIES[regime].values():
        for config, overrides in variants.values():
            load_config(REPO / config, overrides)


def test_results_take_each_variants_own_runs_by_exact_name(tmp_path, monkeypatch):
    """``ce_s12`` is seed 12 of ``ce``; ``prcl_ce_s1`` (the prcl study's baseline) and
    ``ce_s1_old`` are not runs of the pico study's ``ce``."""
    monkeypatch.setattr(study, "WORK", tmp_path / "work")
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    for name, miou in (("ce_s0", 30.0), ("ce_s12", 31.0), ("prcl_ce_s1", 5.0), ("ce_s1_old", 6.0)):
        wd = tmp_path / "work" / "pretrained128" / name
        wd.mkdir(parents=True)
        (wd / "metrics.json").write_text(json.dumps({"aAcc": 1.0, "mIoU": miou, "mAcc": 1.0}))
    data = json.loads(study.write_results("pretrained128", "pico").read_text())
    assert [(r["variant"], r["seed"], r["metrics"]["mIoU"]) for r in data["runs"]] == [("ce", 0, 30.0), ("ce", 12, 31.0)]
    prcl = json.loads(study.write_results("pretrained128", "prcl").read_text())
    assert [(r["variant"], r["seed"], r["metrics"]["mIoU"]) for r in prcl["runs"]] == [("ce", 1, 5.0)]


def test_test_command_scores_the_final_checkpoint_on_the_test_split(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", tmp_path / "work")
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    levels = {"fine": {"aAcc": 80.0, "mIoU": 40.0, "mAcc": 50.0}}
    done = study._work_dir("pretrained128", "pico", "pico_memory", 0)
    done.mkdir(parents=True)
    (done / "metrics.json").write_text(json.dumps({"aAcc": 80.0, "mIoU": 40.0, "mAcc": 50.0, "levels": levels}))
    (done / "last_checkpoint").write_text("iter_1500.pth\n")
    unfinished = study._work_dir("pretrained128", "pico", "pico_memory", 1)
    unfinished.mkdir(parents=True)
    calls = []

    def fake_run(cmd, cwd, env, stdout, stderr, check):
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.write_text(json.dumps({"aAcc": 81.0, "mIoU": 39.0, "mAcc": 49.0}))

    monkeypatch.setattr(study.subprocess, "run", fake_run)
    assert study.main(["test", "pretrained128", "pico", "--variants", "pico_memory", "--seeds", "0", "1"]) == 0
    assert len(calls) == 1  # the unfinished run is skipped
    cmd = calls[0]
    assert cmd[cmd.index("segproto.test") + 1:cmd.index("--split")] == [str(done / "config.yaml"),
                                                                        str(done / "iter_1500.pth")]
    assert cmd[cmd.index("--split") + 1] == "test"
    data = json.loads((tmp_path / "results" / "pretrained128_pico.json").read_text())
    (run,) = data["runs"]
    assert run["metrics"]["mIoU"] == 40.0 and run["test_metrics"] == {"aAcc": 81.0, "mIoU": 39.0, "mAcc": 49.0}
    study.main(["test", "pretrained128", "pico", "--variants", "pico_memory", "--seeds", "0"])
    assert len(calls) == 1  # scored once


def test_table_adds_test_split_columns_for_scored_runs():
    def run(variant, seed, val, test=None):
        r = {"variant": variant, "seed": seed, "metrics": {"mIoU": val, "aAcc": 90.0, "mAcc": 50.0}}
        if test is not None:
            r["test_metrics"] = {"mIoU": test, "aAcc": 90.0, "mAcc": 50.0}
        return r

    plain = tables.table({"study": "pico", "regime": "r", "runs": [run("ce", 0, 10.0), run("x", 0, 11.0)]})
    assert "test" not in plain
    runs = [run("ce", 0, 10.0, 12.0), run("ce", 1, 20.0, 22.0), run("x", 0, 11.0, 14.0), run("x", 1, 21.0, 24.0)]
    text = tables.table({"study": "pico", "regime": "r", "runs": runs})
    head, _, ce_row, x_row = text.splitlines()
    assert head.split(" | ")[-2:] == ["Δ fine mIoU vs ce", "Δ test fine mIoU vs ce |"]
    cells = [c.strip() for c in x_row.strip("|").split("|")]
    # val 11/21 -> 16.00 ± 7.07; test 14/24 -> 19.00 ± 7.07; paired diffs +1,+1 (val) and +2,+2 (test)
    assert cells[2] == "16.00 ± 7.07" and "19.00 ± 7.07" in cells
    assert cells[-2] == "+1.00 [+1.00, +1.00]*" and cells[-1] == "+2.00 [+2.00, +2.00]*"


def test_per_class_pairs_runs_by_seed():
    def run(variant, seed, iou):
        return {"variant": variant, "seed": seed,
                "metrics": {"mIoU": sum(iou) / 2, "aAcc": 0.0, "mAcc": 0.0, "IoU": iou, "classes": ["a", "b"]}}

    data = {"study": "pico", "regime": "r", "runs": [run("ce", 0, [10.0, 50.0]), run("ce", 1, [20.0, 60.0]),
                                                     run("x", 1, [23.0, 59.0]), run("x", 0, [11.0, 48.0]),
                                                     run("x", 2, [99.0, 99.0])]}  # seed 2 has no ce pair
    lines = tables.per_class(data, "x").splitlines()
    # b: (48-50 + 59-60)/2 = -1.5 (listed first, the larger loss); a: (1 + 3)/2 = +2.0
    assert lines[2] == "| b | 55.00 | 53.50 | -1.50 |" and lines[3] == "| a | 15.00 | 17.00 | +2.00 |"
    assert "2 paired runs" in lines[0]


def test_sweep_record_and_table_from_a_sweep_work_dir(tmp_path):
    record = _script("sweep_record")
    wd = tmp_path / "sweep"
    wd.mkdir()
    (wd / "sweep_space.yaml").write_text("loss.contrast.weight:\n  loguniform: [0.01, 0.5]\n"
                                         "loss.contrast.warmup_iters:\n  quniform: [0, 750, 125]\n")
    (wd / "sweep_base.yaml").write_text("loss:\n  contrast: {weight: 0.1, warmup_iters: 188}\n")
    (wd / "results.csv").write_text(
        "trial_id,status,best_mIoU,best_iter,iterations,loss.contrast.weight,loss.contrast.warmup_iters\n"
        "aaa,early_stopped,30.5000,500,500,0.2,250\n"
        "bbb,completed,39.7680,1500,1500,0.0856,500\n"
        "ccc,error,,0,0,0.03,0\n")
    reports = {"aaa": [(500, 30.5)], "bbb": [(1000, 38.0762), (500, 30.67), (1500, 39.768)], "ccc": []}
    for tid, reps in reports.items():
        (wd / f"trial_{tid}").mkdir()
        p = {"aaa": (0.2, 250), "bbb": (0.0856, 500), "ccc": (0.03, 0)}[tid]
        (wd / f"trial_{tid}" / "params.json").write_text(
            json.dumps({"loss.contrast.weight": p[0], "loss.contrast.warmup_iters": p[1]}))
        (wd / f"trial_{tid}" / "result.json").write_text(
            "".join(json.dumps({"iter": i, "mIoU": m, "aAcc": 90.0, "mAcc": 50.0, "pid": 1}) + "\n" for i, m in reps))
    data = record.build(wd, "r_pico", "python search/sweep.py x")
    assert data["best"] == "bbb" and data["defaults"] == {"loss.contrast.weight": 0.1,
                                                          "loss.contrast.warmup_iters": 188}
    bbb = next(t for t in data["trials"] if t["trial_id"] == "bbb")
    assert [r["iter"] for r in bbb["reports"]] == [500, 1000, 1500] and "pid" not in bbb["reports"][0]
    assert bbb["best_mIoU"] == 39.768 and bbb["status"] == "completed"
    assert tables.sweep_table(data).splitlines() == [
        "| trial | status | `weight` | `warmup_iters` | mIoU @ 500 | mIoU @ 1000 | mIoU @ 1500 |",
        "|---|---|---:|---:|---:|---:|---:|",
        "| defaults |  | 0.1 | 188 |  |  |  |",
        "| **bbb** | completed | 0.0856 | 500 | 30.67 | 38.08 | 39.77 |",
        "| aaa | early_stopped | 0.2 | 250 | 30.50 |  |  |",
        "| ccc | error | 0.03 | 0 |  |  |  |",
    ]

    # aaa, stopped wrongly at 500, trained on by scripts/sweep_continue.py past bbb: it becomes the best
    cont = tmp_path / "continued"
    cont.mkdir()
    (cont / "aaa.json").write_text(json.dumps({"trial_id": "aaa", "continuation": [
        {"iter": 1000, "mIoU": 38.5, "aAcc": 90.0, "mAcc": 50.0, "mIoU_fine": 38.5},
        {"iter": 1500, "mIoU": 40.125, "aAcc": 90.5, "mAcc": 51.0}]}))
    data = record.build(wd, "r_pico", "python search/sweep.py x", cont)
    assert (data["best"], data["best_tune"]) == ("aaa", "bbb")
    aaa = next(t for t in data["trials"] if t["trial_id"] == "aaa")
    assert aaa["continued"] == [{"iter": 1000, "mIoU": 38.5, "aAcc": 90.0, "mAcc": 50.0},
                                {"iter": 1500, "mIoU": 40.125, "aAcc": 90.5, "mAcc": 51.0}]
    assert aaa["status"] == "early_stopped" and aaa["best_mIoU"] == 30.5  # Tune's own view is kept
    assert tables.sweep_table(data).splitlines()[3:5] == [
        "| **aaa** | early_stopped | 0.2 | 250 | 30.50 | 38.50† | 40.12† |",
        "| bbb | completed | 0.0856 | 500 | 30.67 | 38.08 | 39.77 |"]
    assert tables.sweep_table(data).splitlines()[-1].startswith("† trained on to the end outside Tune")
    (cont / "zzz.json").write_text(json.dumps({"trial_id": "zzz", "continuation": []}))
    with pytest.raises(SystemExit, match="zzz not trials of"):
        record.build(wd, "r_pico", "x", cont)

    (wd / "results.csv").unlink()
    with pytest.raises(SystemExit, match="results.csv not found"):
        record.build(wd, "r_pico", "x")


def test_a_resumed_study_run_keeps_the_commit_and_threads_it_started_with(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "WORK", tmp_path / "work")
    monkeypatch.setattr(study, "git_commit", lambda: "now")
    monkeypatch.setattr(study, "machine_info", lambda: {"cpu": "B"})
    calls = []

    def fake(cmd, log, threads, append=False):
        calls.append((cmd, log, threads, append))
        (Path(cmd[cmd.index("--work-dir") + 1]) / "metrics.json").write_text("{}")

    monkeypatch.setattr(study, "run_logged", fake)
    wd = study._work_dir("pretrained128", "pico", "pico_memory", 2)
    wd.mkdir(parents=True)
    (wd / "last_checkpoint").write_text("iter_1000.pth")
    (wd / "commit.txt").write_text("first\n")
    (wd / "threads.txt").write_text("2\n")
    (wd / "machine.json").write_text(json.dumps([{"cpu": "A"}]))
    assert study.train("pretrained128", "pico", "pico_memory", 2, 1) == wd
    [(cmd, log, threads, append)] = calls
    assert "--resume" in cmd and append and log == wd / "stdout.log" and threads == 1
    assert cmd[cmd.index("--cfg-options") + 1:] == ["seed=2", "train.progress_bar=false"]
    assert (wd / "commit.txt").read_text() == "first\n" and (wd / "threads.txt").read_text() == "2\n"
    assert json.loads((wd / "machine.json").read_text()) == [{"cpu": "A"}, {"cpu": "B"}]  # resumed elsewhere
    study.train("pretrained128", "pico", "pico_memory", 2, 1)  # finished: not trained again
    assert len(calls) == 1


def test_fewshot_table_states_the_floor_difference_only_when_there_is_one():
    def run(variant, fold, seed, one, five):
        return {"variant": variant, "fold": fold, "seed": seed, "metrics": {"mIoU_1shot": one, "mIoU_5shot": five}}

    floors = [run("prior_only", 0, None, 17.0, 18.0), run("prior_only", 1, None, 4.0, 4.0)]
    only_floors = tables.table({"study": "hdmnet", "runs": floors})
    assert "prior_only | 2 |" in only_floors and "minus the prior floor" not in only_floors
    # differences by hand: fold 0 13.5 - 17.0 = -3.5, 13.0 - 18.0 = -5.0 (one pair each)
    text = tables.table({"study": "hdmnet", "runs": [*floors, run("distill", 0, 0, 13.5, 13.0)]})
    assert text.endswith("(mIoU, 95% interval over fold x seed runs): distill 1shot -3.50 (1 pair); "
                         "distill 5shot -5.00 (1 pair).")


def test_fewshot_floor_is_the_one_of_the_runs_own_machine():
    def run(variant, fold, seed, one, five, machine=None):
        rec = {"variant": variant, "fold": fold, "seed": seed, "metrics": {"mIoU_1shot": one, "mIoU_5shot": five}}
        return {**rec, "machine": [machine]} if machine else rec

    new = {"cpu": "B", "torch_cpu_capability": "AVX512", "numpy": "2"}
    runs = [run("prior_only", 0, None, 17.0, 18.0), run("prior_only", 0, None, 15.0, 16.0, new),
            run("distill", 0, 0, 13.0, 20.0), run("distill", 0, 1, 14.0, 19.0, new),
            run("distill", 1, 1, 9.0, 9.0, new)]  # fold 1 has no floor from machine B: not compared
    # by hand: seed 0 on the first machine 13 - 17 = -4, 20 - 18 = +2; seed 1 on B 14 - 15 = -1, 19 - 16 = +3
    # 1 shot: mean -2.5, sd 2.1213, half 12.7062 * 2.1213 / sqrt(2) = 19.06; 5 shots: mean +2.5, sd 0.7071, half 6.35
    text = tables.table({"study": "hdmnet", "runs": runs})
    assert text.endswith("distill 1shot -2.50 [-21.56, +16.56]; distill 5shot +2.50 [-3.85, +8.85].")
    assert "prior_only | 2 |" in text


def test_asha_replay_marks_the_decisions_a_resume_changed(tmp_path, capsys):
    """Hand-computed (rung 1000, rf 2; cut = median of the earlier rung scores): a 38.08 (first)
    and b 38.24 pass; c 39.06 passes; d 39.11 passes (cut 38.24) though the sweep stopped it; e 37.0
    stops (cut (38.24 + 39.06) / 2 = 38.65) though the sweep kept it; f 38.50 passes (cut 38.24)."""
    replay = _script("asha_replay")
    assert replay.milestones(1000, 2, 1500) == [1000] and replay.milestones(1, 3, 27) == [1, 3, 9, 27]

    def trial(tid, status, *reports):
        return {"trial_id": tid, "status": status,
                "reports": [{"iter": i, "mIoU": m, "timestamp": ts} for i, m, ts in reports]}

    trials = [trial("a", "completed", (500, 30.0, 1), (1000, 38.08, 2), (1500, 39.8, 3)),
              trial("b", "completed", (1000, 38.24, 4), (1500, 40.0, 5)),
              trial("c", "completed", (1000, 39.06, 6), (1500, 40.96, 8)),
              trial("d", "early_stopped", (1000, 39.11, 9)),
              trial("e", "completed", (1000, 37.0, 10), (1500, 38.4, 11)),
              trial("f", "completed", (1000, 38.50, 12), (1500, 40.1, 13))]
    got = replay.replay(trials, [1000], 2)
    assert {t: r["stopped_at"] for t, r in got.items()} == {"a": None, "b": None, "c": None, "d": None,
                                                            "e": 1000, "f": None}
    record = tmp_path / "r.json"
    record.write_text(json.dumps({"trials": trials}))
    assert replay.main([str(record), "--grace-period", "1000", "--max-t", "1500"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[5] == "| d | 39.11 | continued | early_stopped | differs |"
    assert rows[6] == "| e | 37.00 | stopped at 1000 | completed | differs |"
    assert rows[7] == "| f | 38.50 | continued | completed |  |"
    del trials[0]["reports"][0]["timestamp"]
    record.write_text(json.dumps({"trials": trials}))
    with pytest.raises(SystemExit, match="without a timestamp"):
        replay.main([str(record), "--grace-period", "1000", "--max-t", "1500"])


def test_a_study_run_notes_the_machine_it_trained_on(tmp_path, monkeypatch):
    """A fresh start replaces what an earlier start left; a resume on the same machine adds nothing."""
    import torch

    monkeypatch.setattr(study, "WORK", tmp_path / "work")
    monkeypatch.setattr(study, "git_commit", lambda: "now")
    monkeypatch.setattr(study, "run_logged", lambda cmd, log, threads, append=False: None)
    wd = study._work_dir("pretrained128", "pico", "ce", 0)
    wd.mkdir(parents=True)
    (wd / "machine.json").write_text(json.dumps([{"cpu": "left by a start that never checkpointed"}]))
    study.train("pretrained128", "pico", "ce", 0, 1)
    [here] = json.loads((wd / "machine.json").read_text())
    assert here["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert here["torch"] == torch.__version__.split("+")[0]
    assert here["cpu"]
    (wd / "last_checkpoint").write_text("iter_500.pth")
    study.train("pretrained128", "pico", "ce", 0, 1)  # resumed on the same machine
    assert json.loads((wd / "machine.json").read_text()) == [here]
