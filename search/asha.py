"""ASHA whose rungs survive ``--resume``.

Ray Tune does not store a scheduler's state with the experiment: ``Tuner.restore`` rebuilds the
scheduler from ``tuner.pkl``, written when the sweep started, so every score recorded at ASHA's
rungs is gone after a resume (ray-project/ray#30838). Two wrong decisions follow. A trial that
reaches a rung after the resume is compared with only the trials that reached it since, and a
trial resumed past a rung has its next report recorded at that rung instead of its score there:
a sweep resumed while a trial trains from iteration 1,000 to 1,500 compares the next trial's
iteration-1,000 score with that trial's iteration-1,500 one.

:class:`ResumableASHA` rebuilds the rungs from the experiment itself. Tune adds every restored
trial to the scheduler (``on_trial_add``, finished trials included) before any new report, and
each trial's folder in the experiment's storage keeps ``progress.csv``, one row per report; the
trial's score at a rung is its first report at or past the rung's milestone, exactly what ASHA
recorded when the report came in.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Optional

from ray.tune.schedulers import ASHAScheduler

PROGRESS = "progress.csv"


def stored_reports(trial: Any, time_attr: str, metric: str) -> list[tuple[float, float]]:
    """``(time, metric)`` of each report of ``trial`` in its ``progress.csv`` in the experiment's
    storage, in report order; empty for a trial without reports (a new one)."""
    try:
        folder = trial.path
    except RuntimeError:  # a new trial: Tune names its folder after adding it
        return []
    fs = trial.storage.storage_filesystem
    try:
        with fs.open_input_stream(f"{folder}/{PROGRESS}") as f:
            text = f.readall().decode()
    except (FileNotFoundError, OSError):
        return []
    reports = []
    for row in csv.DictReader(io.StringIO(text)):
        t, m = row.get(time_attr), row.get(metric)
        if t not in (None, "") and m not in (None, ""):
            reports.append((float(t), float(m)))
    return reports


def seed_rungs(rungs: list[tuple[float, dict]], trial_id: str, reports: list[tuple[float, float]],
               metric_op: float) -> None:
    """Records ``trial_id``'s score at each rung of ``rungs`` (ASHA's ``[(milestone, {trial_id:
    signed score})]``) it has passed: its first report at or after the milestone."""
    for milestone, recorded in rungs:
        if trial_id in recorded:
            continue
        score: Optional[float] = next((m for t, m in reports if t >= milestone), None)
        if score is not None:
            recorded[trial_id] = metric_op * score


class ResumableASHA(ASHAScheduler):
    """``ASHAScheduler`` that restores each trial's rung scores from its stored reports when Tune
    adds it (a no-op for a new trial: it has no ``progress.csv`` yet)."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        reports = stored_reports(trial, self._time_attr, self._metric)
        if not reports:
            return
        rungs = self._trial_info[trial.trial_id]._rungs
        seed_rungs(rungs, trial.trial_id, reports, self._metric_op)
        restored = {m: self._metric_op * r[trial.trial_id] for m, r in sorted(rungs) if trial.trial_id in r}
        if restored:  # the driver's output: a resumed sweep shows what its rungs start from
            print(f"ASHA: trial {trial.trial_id}: rung scores restored "
                  + ", ".join(f"{self._metric} {v:.4f} at {self._time_attr} {m:g}" for m, v in restored.items()),
                  flush=True)
