"""search/sweep.py without Ray: paths, the trial config, the --resume consistency check."""

from pathlib import Path

import pytest

from search.space import load_space
from search.sweep import absolute_paths, check_same_sweep, parse_args, trial_base
from segproto.config import ConfigError, config_to_dict, load_config


def test_paths_are_made_absolute_and_trials_checkpoint_at_each_evaluation(write_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = config_to_dict(load_config(write_cfg(eval_interval=2, checkpoint_interval=5)))
    base["data"]["root"], base["model"]["pretrained"], base["train"]["load_from"] = "data/x", "cache", "w/a.pth"
    out = absolute_paths(base)
    assert out["data"]["root"] == str(tmp_path / "data/x") and out["train"]["load_from"] == str(tmp_path / "w/a.pth")
    assert out["model"]["pretrained"] == "cache" and base["data"]["root"] == "data/x"
    for keyword in ("cache", "download", "pip"):  # weight sources, not files: kept as they are
        base["model"]["pretrained"] = keyword
        assert absolute_paths(base)["model"]["pretrained"] == keyword
    base["model"]["pretrained"] = "pip/w.pth"  # a file whose path starts like a keyword
    assert absolute_paths(base)["model"]["pretrained"] == str(tmp_path / "pip/w.pth")
    trial = trial_base(out)
    assert trial["train"]["checkpoint_interval"] == 2 and trial["train"]["max_keep_ckpts"] == 1
    assert trial["train"]["progress_bar"] is False and out["train"]["checkpoint_interval"] == 5


def test_resume_must_rebuild_the_same_config_and_space(write_cfg, write_space, tmp_path):
    base = trial_base(config_to_dict(load_config(write_cfg())))
    space = load_space(write_space({"optim.lr": {"loguniform": [0.001, 0.1]}}))
    check_same_sweep(tmp_path, base, space, resume=False)  # a new sweep records both
    check_same_sweep(tmp_path, base, space, resume=True)
    changed = dict(base, seed=base["seed"] + 1)
    other = load_space(write_space({"optim.lr": {"loguniform": [0.001, 0.2]}}, name="other.yaml"))
    with pytest.raises(ConfigError, match=r"differs from the interrupted sweep's .* at: seed \(was 3, now 4\), space optim\.lr"):
        check_same_sweep(tmp_path, changed, other, resume=True)
    with pytest.raises(ConfigError, match="not found; is .* a sweep directory"):
        check_same_sweep(tmp_path / "none", base, space, resume=True)


def test_options_are_checked(capsys):
    with pytest.raises(SystemExit):
        parse_args(["c.yaml", "--space", "s.yaml", "--num-samples", "0", "--work-dir", "d"])
    assert "--num-samples: must be >= 1, got 0" in capsys.readouterr().err
    a = parse_args(["c.yaml", "--space", "s.yaml", "--num-samples", "3", "--work-dir", "d", "--gpus-per-trial", "0.5"])
    assert (a.gpus_per_trial, a.cpus_per_trial, a.scheduler, a.max_concurrent) == (0.5, 1.0, "asha", 4)
    assert Path(a.config).name == "c.yaml"


def test_asha_rung_before_every_term_starts_is_refused_before_anything_runs(write_cfg, write_space, tmp_path,
                                                                           capsys):
    from search.sweep import main

    cfg = write_cfg()  # 6 iterations, evaluations every 3: the default grace period is 3
    space = write_space({"loss.contrast.warmup_iters": {"randint": [0, 4]}})
    wd = tmp_path / "sweep"
    args = [str(cfg), "--space", str(space), "--num-samples", "2", "--work-dir", str(wd),
            "--cfg-options", "method.name=pico"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "first rung (iteration 3, from --grace-period 3 and train.eval_interval 3)" in err
    assert "loss.contrast.warmup_iters reaches iteration 4 in " in err and "--scheduler fifo" in err
    assert not wd.exists()
