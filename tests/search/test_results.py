"""Sweep outputs from trial rows: status, CSV, best config, plot. No Ray."""

import csv

import pytest

from search.results import best_row, plot_params, trial_row, write_best_config, write_csv
from search.space import load_space
from segproto.config import config_to_dict, load_config

REPORTS = [{"iter": 3, "mIoU": 10.0}, {"iter": 6, "mIoU": 12.5}, {"iter": 9, "mIoU": 11.0}]


@pytest.mark.parametrize("tune_status, reports, status", [
    ("TERMINATED", REPORTS, "completed"),
    ("TERMINATED", REPORTS[:2], "early_stopped"),
    ("ERROR", REPORTS[:1], "error"),
    ("PAUSED", REPORTS[:1], "unfinished"),
    ("PENDING", [], "unfinished"),
])
def test_trial_row_status(tune_status, reports, status):
    row = trial_row("t0", tune_status, {"optim.lr": 0.01}, reports, iters=9)
    assert row.status == status
    assert row.iterations == (reports[-1]["iter"] if reports else 0)


@pytest.mark.parametrize("own_iters, reports, status", [
    (6, REPORTS[:2], "completed"),  # a sampled budget of 6 that ended at 6 (the config says 9)
    (9, REPORTS[:2], "early_stopped"),
    (3, REPORTS[:1], "completed"),
])
def test_trial_row_status_uses_the_trials_own_iters(own_iters, reports, status):
    row = trial_row("t0", "TERMINATED", {"train.iters": own_iters}, reports, iters=9)
    assert row.status == status


def test_outputs(write_cfg, write_space, tmp_path):
    space = load_space(write_space({"optim.lr": {"loguniform": [0.001, 0.1]},
                                    "loss.contrast.sampling": {"choice": ["all", "hardest"]}}))
    rows = [trial_row("a", "TERMINATED", {"optim.lr": 0.01, "loss.contrast.sampling": "all"}, REPORTS, 9),
            trial_row("b", "TERMINATED", {"optim.lr": 0.05, "loss.contrast.sampling": "hardest"},
                      [{"iter": 3, "mIoU": 14.0}], 9),
            trial_row("c", "ERROR", {"optim.lr": 0.002, "loss.contrast.sampling": "all"}, [], 9)]
    assert (rows[0].best_miou, rows[0].best_iter) == (12.5, 6)
    best = best_row(rows)
    assert best.trial_id == "b"

    write_csv(rows, space, tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["trial_id"] for r in table] == ["a", "b", "c"]
    assert table[1] == {"trial_id": "b", "status": "early_stopped", "best_mIoU": "14.0000", "best_iter": "3",
                        "iterations": "3", "optim.lr": "0.05", "loss.contrast.sampling": "hardest"}
    assert table[2]["best_mIoU"] == "" and table[2]["status"] == "error"

    base = config_to_dict(load_config(write_cfg()))
    write_best_config(base, best, tmp_path / "best.yaml")
    cfg = load_config(tmp_path / "best.yaml")
    assert (cfg.optim.lr, cfg.loss.contrast.sampling, cfg.train.iters) == (0.05, "hardest", base["train"]["iters"])

    plot_params(rows, space, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
