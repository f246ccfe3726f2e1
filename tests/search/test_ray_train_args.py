"""Options of the multi-worker paths (``--workers-per-trial``, ``--launcher ray``), checked before any
Ray starts. The runs themselves: tests/engine/test_ddp.py, tests/search/test_cluster.py (slow)."""

import argparse

import pytest

from segproto.train import main as train_main


def test_per_trial_and_per_worker_resources_do_not_mix(write_cfg, write_space, tmp_path, capsys):
    from search.sweep import main

    space = write_space({"optim.lr": {"loguniform": [0.005, 0.05]}})
    base = [str(write_cfg()), "--space", str(space), "--num-samples", "2"]
    assert main(base + ["--work-dir", str(tmp_path / "a"), "--workers-per-trial", "2", "--cpus-per-trial", "2"]) == 2
    assert "use --cpus-per-worker and --gpus-per-worker" in capsys.readouterr().err
    assert main(base + ["--work-dir", str(tmp_path / "b"), "--workers-per-trial", "0"]) == 2
    assert "--workers-per-trial must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_launcher_ray_options(write_cfg, tmp_path, monkeypatch, capsys):
    cfg = str(write_cfg())
    with pytest.raises(SystemExit) as exc:
        train_main([cfg, "--launcher", "ray", "--workers", "0"])
    assert exc.value.code == 2 and "--workers >= 1" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exc:
        train_main([cfg, "--launcher", "ray"])
    assert exc.value.code == 2 and "not torchrun" in capsys.readouterr().err


def test_launcher_ray_refuses_a_used_work_dir_before_starting_ray(tiny_cfg, tmp_path):
    import ray

    from segproto.engine.trainer import WorkDirError
    from segproto.launch import run_on_ray

    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "iter_3.pth").write_bytes(b"")
    args = argparse.Namespace(resume=None, force=False, address=None, workers=2, cpus_per_worker=1.0,
                              gpus_per_worker=0.0, placement_strategy="PACK", max_failures=0, config="cfg.yaml")
    with pytest.raises(WorkDirError, match="holds another run"):
        run_on_ray(tiny_cfg(), wd, args)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_on_ray(tiny_cfg(), tmp_path / "empty", argparse.Namespace(**{**vars(args), "resume": True}))
    assert not ray.is_initialized() and (wd / "iter_3.pth").is_file()
