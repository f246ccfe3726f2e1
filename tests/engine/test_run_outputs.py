"""Run hygiene: train.log, the recorded and the default work dir, curves, the final confusion
matrix, schedule points clamped to a shortened run, and the palette in the checkpoint."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from segproto.config import load_config
from segproto.config.fit import fit_to_run
from segproto.engine.run_log import default_work_dir
from tests.engine.conftest import REPO, tiny_cfg_dict


def _train(cwd, *args):
    """Runs the command line; stdout and stderr decoded as written (text mode would turn tqdm's
    carriage returns into newlines)."""
    out = subprocess.run([sys.executable, "-m", "segproto.train", *args], capture_output=True, cwd=cwd)
    out.stdout, out.stderr = out.stdout.decode(), out.stderr.decode()
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def pico_run(tmp_path_factory, tiny_root):
    """A 4-iteration PiCo run started from the command line with no --work-dir, shortened by one
    override although the file asks for LR and PiCo warm-ups of 50 and 200 iterations."""
    tmp = tmp_path_factory.mktemp("run_outputs")
    d = tiny_cfg_dict(tiny_root, eval_interval=2, checkpoint_interval=2, log_interval=2, progress_bar=True)
    d.update(method={"name": "pico"}, sched={"warmup_iters": 50},
             loss={"contrast": {"warmup_iters": 200, "proj_dim": 16, "max_views": 4}})
    (tmp / "configs/pico").mkdir(parents=True)
    (tmp / "configs/pico/tiny.yaml").write_text(yaml.safe_dump(d))
    out = _train(tmp, "configs/pico/tiny.yaml", "--cfg-options", "train.iters=4")
    return tmp, tmp / "work_dirs/pico/tiny", out


def test_default_work_dir_is_the_config_path():
    assert default_work_dir("configs/pico/quickstart.yaml", REPO) == "work_dirs/pico/quickstart"
    assert default_work_dir("configs/quickstart.yaml", REPO) == "work_dirs/quickstart"
    assert default_work_dir(str(REPO / "configs/pretrained128/ce.yaml"), REPO) == "work_dirs/pretrained128/ce"
    assert default_work_dir("/elsewhere/exp/a.yaml", REPO) == "work_dirs/a"
    assert "--work-dir work_dirs/quickstart" in (REPO / "Makefile").read_text()  # make quickstart keeps its dir


def test_shortened_run_clamps_schedule_points():
    cfg = load_config(REPO / "configs/pico/quickstart.yaml", ["train.iters=20"])  # was a config error
    fitted = fit_to_run(cfg)
    assert (fitted.cfg.sched.warmup_iters, fitted.cfg.loss.contrast.warmup_iters) == (20, 20)
    assert fitted.clamped == ["sched.warmup_iters 50 -> 20", "loss.contrast.warmup_iters 200 -> 20"]
    assert len(fitted.warnings) == 1 and fitted.warnings[0].startswith("loss.contrast.warmup_iters (200) >= train.iters")
    ce = fit_to_run(load_config(REPO / "configs/quickstart.yaml", ["train.iters=20"]))
    assert ce.clamped == ["sched.warmup_iters 50 -> 20"] and ce.warnings == []  # PiCo keys only for pico
    assert ce.cfg.loss.contrast.warmup_iters == 5000  # the default, unused by ce: left as it is
    full = fit_to_run(load_config(REPO / "configs/pico/quickstart.yaml"))
    assert full.clamped == [] and full.warnings == [] and full.cfg == load_config(REPO / "configs/pico/quickstart.yaml")


@pytest.mark.slow
def test_run_log_work_dir_and_clamp_line(pico_run):
    tmp, wd, out = pico_run
    assert (wd / "iter_4.pth").is_file()  # the default work dir: work_dirs/<path without configs/ and .yaml>
    assert yaml.safe_load((wd / "config.yaml").read_text())["work_dir"] == str(wd)
    saved = yaml.safe_load((wd / "config.yaml").read_text())
    assert saved["sched"]["warmup_iters"] == 4 and saved["loss"]["contrast"]["warmup_iters"] == 4
    log = (wd / "train.log").read_text()
    assert "\r" not in log and "\r" in out.stderr  # the progress bar ran, on the terminal only
    lines = log.splitlines()
    clamp = [ln for ln in lines if ln.startswith("schedule fitted")]
    assert clamp == ["schedule fitted to train.iters=4 (clamped to the run, not scaled): "
                     "sched.warmup_iters 50 -> 4, loss.contrast.warmup_iters 200 -> 4"]
    assert any(ln.startswith("warning: loss.contrast.warmup_iters (200) >= train.iters (4)") for ln in lines)
    assert [ln.split()[1] for ln in lines if ln.startswith("iter ")] == ["2/4", "4/4"]
    assert [ln.split(":")[0] for ln in lines if ln.startswith("eval iter")] == ["eval iter 2", "eval iter 4"]
    assert any(ln.startswith("segproto ") and "method 'pico'" in ln for ln in lines)  # the summary
    import torch  # the machine line: CPU kernel set and versions, what decides a run's rounding
    [machine] = [ln for ln in lines if ln.startswith("machine: ")]
    assert f"(torch CPU kernels {torch.backends.cpu.get_cpu_capability()})" in machine
    assert f"torch {torch.__version__.split('+')[0]}" in machine
    assert "mIoU" in log and "level coarse:" in log  # the per-class table and the levels
    assert all(ln in out.stdout + out.stderr for ln in lines)  # every logged line is one the run printed
    # --resume appends: the first run's lines stay, the resumed run's follow
    _train(tmp, "configs/pico/tiny.yaml", "--cfg-options", "train.iters=4", "--resume")
    again = (wd / "train.log").read_text()
    assert again.startswith(log) and "resumed from" in again[len(log):]
    assert again[len(log):].count("\nmachine: ") == 1  # each segment names the machine it ran on


@pytest.mark.slow
def test_final_confusion_matrix_in_work_dir(pico_run):
    _, wd, _ = pico_run
    cm = json.loads((wd / "confusion.json").read_text())
    metrics = json.loads((wd / "metrics.json").read_text())
    m = np.asarray(cm["matrix"], np.float64)
    assert cm["classes"] == metrics["classes"] and cm["rows"] == "ground truth"
    tp = np.diag(m)
    union = m.sum(0) + m.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    assert np.nanmean(iou) * 100 == pytest.approx(metrics["mIoU"])
    assert tp.sum() / m.sum() * 100 == pytest.approx(metrics["aAcc"])
    assert (wd / "confusion.png").stat().st_size > 1000


@pytest.mark.slow
def test_palette_in_checkpoint_meta(pico_run, tmp_path):
    from segproto import load_model
    from segproto.data.synth_classes import PALETTE

    _, wd, _ = pico_run
    state = torch.load(wd / "iter_4.pth", weights_only=True)
    assert state["meta"]["palette"] == [list(c) for c in PALETTE]
    custom = [[i, 255 - i, 7] for i in range(len(state["meta"]["classes"]))]
    state["meta"]["palette"] = custom  # load_model takes the run's palette, not the config's default
    torch.save(state, tmp_path / "ckpt.pth")
    assert [list(c) for c in load_model(tmp_path / "ckpt.pth", "cpu").palette] == custom


def test_curves_show_lr_and_every_level(tmp_path, monkeypatch):
    import matplotlib.figure

    from segproto.engine.logger import save_plots

    recs = [{"mode": "train", "iter": 2, "lr": 0.01, "loss": 2.0, "loss_ce": 2.0},
            {"mode": "train", "iter": 4, "lr": 0.005, "loss": 1.5, "loss_ce": 1.5},
            {"mode": "val", "iter": 4, "aAcc": 50.0, "mIoU": 10.0, "mAcc": 12.0, "mIoU_fine": 10.0,
             "mIoU_middle": 20.0, "mIoU_coarse": 30.0}]
    (tmp_path / "scalars.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    figs, real = [], matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: (figs.append(self), real(self, *a, **k)))
    save_plots(tmp_path, {})
    axes = figs[0].axes
    lr = [ln for ax in axes for ln in ax.lines if ln.get_label() == "lr"]
    assert len(lr) == 1 and list(lr[0].get_ydata()) == [0.01, 0.005]
    miou = {ln.get_label(): list(ln.get_ydata()) for ax in axes for ln in ax.lines if ln.get_label().startswith("mIoU")}
    assert miou == {"mIoU": [10.0], "mIoU_fine": [10.0], "mIoU_middle": [20.0], "mIoU_coarse": [30.0]}
    assert (tmp_path / "curves.png").is_file()


def test_run_log_keeps_lines_until_start_and_survives_a_full_disk(tmp_path):
    import warnings

    from segproto.engine.run_log import RunLog
    from segproto.utils import log

    shown = warnings.showwarning
    run_log = RunLog()
    log.echo("before the work dir")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful")
    run_log.start(tmp_path / "train.log", append=False)
    log.echo("after")

    class Full:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

        def close(self):
            pass

    run_log._file = Full()
    log.echo("not written")  # no exception: the run goes on
    run_log.close()
    assert warnings.showwarning is shown and run_log.write not in log._SINKS
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines[0] == "before the work dir" and "UserWarning: careful" in lines[1] and lines[-1] == "after"
