"""``search.asha.ResumableASHA``: the rung scores of restored trials come back from their stored
reports, so decisions after ``--resume`` are those of an uninterrupted sweep.

The scenario is the one met by the pretrained PiCo sweep (docs/results.md, "PiCo sweep"): rung at
iteration 1,000, reduction factor 2; trials A and B finished before the resume, C was resumed while
training from 1,000 to 1,500, and D reaches the rung after the resume. Hand-computed: D's 39.11 is
above the median of the rung scores of A, B, C (38.08, 38.24, 39.06 -> 38.24), so ASHA keeps it;
Ray's own ASHA, which starts the resumed sweep with empty rungs, records C's iteration-1,500 score
40.96 at the rung and stops D.
"""

from types import SimpleNamespace

import pytest

pytest.importorskip("ray")
pyarrow_fs = pytest.importorskip("pyarrow.fs")

from ray.tune.schedulers import ASHAScheduler, TrialScheduler  # noqa: E402

from search.asha import ResumableASHA, seed_rungs, stored_reports  # noqa: E402

HISTORY = {"a": [(500, 30.67), (1000, 38.08), (1500, 39.77)],
           "b": [(500, 30.67), (1000, 38.24), (1500, 40.02)],
           "c": [(500, 30.54), (1000, 39.06)]}


def _trial(root, trial_id, reports=None, extra_rows=()):
    """A restored trial as the scheduler sees it: id, folder in the experiment, storage filesystem;
    ``progress.csv`` written there in Tune's layout (``iter`` and ``mIoU`` among other columns)."""
    folder = root / f"trial_{trial_id}"
    folder.mkdir()
    if reports is not None:
        lines = ["iter,mIoU,aAcc,training_iteration,trial_id"]
        lines += [f"{it},{m},90.0,{i + 1},{trial_id}" for i, (it, m) in enumerate(reports)]
        (folder / "progress.csv").write_text("\n".join([*lines, *extra_rows]) + "\n")
    return SimpleNamespace(trial_id=trial_id, path=str(folder),
                           storage=SimpleNamespace(storage_filesystem=pyarrow_fs.LocalFileSystem()))


def _scheduler(cls):
    return cls(time_attr="iter", metric="mIoU", mode="max", max_t=1500, grace_period=1000, reduction_factor=2)


def _resumed_sweep(cls, root):
    """The scheduler after Tune re-added A, B, C on resume and C finished (iteration 1,500)."""
    sched = _scheduler(cls)
    trials = {tid: _trial(root, tid, reports) for tid, reports in HISTORY.items()}
    for t in trials.values():
        sched.on_trial_add(None, t)
    last = {"iter": 1500, "mIoU": 40.96}
    assert sched.on_trial_result(None, trials["c"], last) == TrialScheduler.STOP  # max_t reached
    sched.on_trial_complete(None, trials["c"], last)  # Tune then completes the trial with that result
    return sched


def test_rungs_come_back_after_resume_and_decide_as_an_uninterrupted_sweep(tmp_path, capsys):
    sched = _resumed_sweep(ResumableASHA, tmp_path)
    [(milestone, recorded)] = sched._brackets[0]._rungs
    assert milestone == 1000 and recorded == {"a": 38.08, "b": 38.24, "c": 39.06}  # C's rung score, not 40.96
    assert "ASHA: trial c: rung scores restored mIoU 39.0600 at iter 1000" in capsys.readouterr().out

    d = _trial(tmp_path, "d")  # a new trial: no progress.csv, nothing restored
    sched.on_trial_add(None, d)
    assert sched.on_trial_result(None, d, {"iter": 500, "mIoU": 30.67}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, d, {"iter": 1000, "mIoU": 39.11}) == TrialScheduler.CONTINUE
    e = _trial(tmp_path, "e")  # median of 38.08, 38.24, 39.06, 39.11 is 38.65
    sched.on_trial_add(None, e)
    assert sched.on_trial_result(None, e, {"iter": 1000, "mIoU": 38.50}) == TrialScheduler.STOP


def test_rays_asha_forgets_the_rungs_on_resume(tmp_path):
    """The defect ResumableASHA exists for (ray-project/ray#30838), as the installed Ray has it: if a
    Ray release restores scheduler state itself, this test fails and ResumableASHA can go."""
    sched = _resumed_sweep(ASHAScheduler, tmp_path)
    assert sched._brackets[0]._rungs[0][1] == {"c": 40.96}
    d = _trial(tmp_path, "d")
    sched.on_trial_add(None, d)
    assert sched.on_trial_result(None, d, {"iter": 1000, "mIoU": 39.11}) == TrialScheduler.STOP


def test_stored_reports_skip_rows_without_the_metric_and_missing_files(tmp_path):
    t = _trial(tmp_path, "x", [(3, 10.5), (6, 12.25)], extra_rows=[",,,3,x"])  # a report without metrics
    assert stored_reports(t, "iter", "mIoU") == [(3.0, 10.5), (6.0, 12.25)]
    assert stored_reports(_trial(tmp_path, "y"), "iter", "mIoU") == []

    class NewTrial:  # before Tune names a new trial's folder, its path raises (ray.train StorageContext)
        trial_id = "z"

        @property
        def path(self):
            raise RuntimeError("Should not access `trial_fs_path` without setting `trial_dir_name`")

    assert stored_reports(NewTrial(), "iter", "mIoU") == []


def test_seed_rungs_takes_the_first_report_at_or_past_each_milestone_and_the_mode_sign():
    rungs = [(8, {}), (4, {}), (2, {"t": -1.0})]  # ASHA keeps rungs from the last milestone down
    seed_rungs(rungs, "t", [(1, 5.0), (3, 6.0), (4, 7.0), (7, 9.0)], metric_op=-1.0)
    assert rungs == [(8, {}), (4, {"t": -7.0}), (2, {"t": -1.0})]  # rung 2 already held t: kept
