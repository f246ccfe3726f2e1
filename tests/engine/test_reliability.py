"""Reliability of the trainer: nothing lost, nothing silent, one line per bad input."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from segproto.config import load_config
from segproto.data import DatasetError, build_dataset
from segproto.engine import CheckpointError, NonFiniteLossError, Trainer, load_checkpoint
from segproto.engine.checkpoint import save_checkpoint
from segproto.engine.logger import ScalarWriter
from segproto.engine.trainer import WorkDirError
from tests.engine.conftest import REPO, tiny_cfg_dict


def _cfg(root, tmp_path, name="cfg.yaml", **over):
    d = tiny_cfg_dict(root, **over.pop("train", {}))
    for section, values in over.items():
        d.setdefault(section, {}).update(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d))
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO)


def _finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


@pytest.fixture
def copied_root(tiny_root, tmp_path):
    """A private copy of the tiny dataset (the session one is shared)."""
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return root


def test_nonfinite_batchnorm_stops_before_a_poisoned_save_and_the_named_checkpoint_resumes(tiny_root, tmp_path):
    # lr 1e3 drives the BatchNorm running_var to inf from iteration 5 while the loss stays finite
    path = _cfg(tiny_root, tmp_path, train={"iters": 10, "checkpoint_interval": 1, "eval_interval": 5},
                optim={"lr": 1e3})
    wd = tmp_path / "wd"
    with pytest.raises(NonFiniteLossError, match=r"non-finite BatchNorm statistics at iteration (\d+) .*"
                                                 r"running_var.*Last good checkpoint: .*iter_\d+\.pth") as err:
        Trainer(load_config(path), wd).run()
    ckpts = sorted(wd.glob("iter_*.pth"))
    assert ckpts, "the run saved nothing before the stop"
    for p in ckpts:  # nothing kept is poisoned
        state = load_checkpoint(p)
        assert _finite(state["model"]), p.name
    import re

    named = wd / re.search(r"Last good checkpoint: \S*?(iter_\d+\.pth)", str(err.value)).group(1)
    stop = int(err.value.args[0].split("at iteration ")[1].split()[0])
    assert named.is_file() and int(named.stem.split("_")[1]) <= stop - 2  # its weights gave a finite forward
    assert (wd / "last_checkpoint").read_text() == named.name  # what a plain --resume takes
    # the named checkpoint resumes with a sane learning rate and finishes with finite weights
    sane = load_config(_cfg(tiny_root, tmp_path, "sane.yaml", train={"iters": 10, "checkpoint_interval": 1,
                                                                     "eval_interval": 5}, optim={"lr": 0.01}))
    trainer = Trainer(sane, wd, resume=str(named))
    assert trainer.scheduler.base_lrs[0] == pytest.approx(0.01)  # the new base lr, not the checkpoint's
    trainer.run()
    assert _finite(load_checkpoint(wd / "iter_10.pth")["model"])


def test_fresh_run_refuses_a_used_work_dir_and_force_replaces_it(write_cfg, tiny_cfg, tmp_path):
    wd = tmp_path / "wd"
    Trainer(tiny_cfg(), wd).run()  # iterations 3 and 6 saved
    before = {p.name: p.read_bytes() for p in wd.iterdir() if p.is_file()}
    with pytest.raises(WorkDirError, match=r"holds another run .*iter_3\.pth.*--resume.*--force"):
        Trainer(tiny_cfg(iters=2, eval_interval=2, checkpoint_interval=2, max_keep_ckpts=1), wd)
    assert {p.name: p.read_bytes() for p in wd.iterdir() if p.is_file()} == before  # nothing touched
    out = _cli("segproto.train", str(write_cfg(iters=2, eval_interval=2, checkpoint_interval=2, max_keep_ckpts=1)),
               "--work-dir", str(wd))
    assert out.returncode == 1 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "holds another run" in out.stderr
    out = _cli("segproto.train", str(write_cfg(iters=2, eval_interval=2, checkpoint_interval=2, max_keep_ckpts=1)),
               "--work-dir", str(wd), "--force")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in wd.glob("*.pth")) == ["best_mIoU_iter_2.pth", "iter_2.pth"]
    assert (wd / "last_checkpoint").read_text() == "iter_2.pth"
    assert load_checkpoint(wd / "iter_2.pth")["meta"]["iter"] == 2
    assert [json.loads(ln)["iter"] for ln in (wd / "scalars.jsonl").read_text().splitlines()] == [2, 2]


@pytest.mark.parametrize("split", ["train_labled_1-8", "train_unlabeled_1-3"])
def test_a_missing_or_misspelled_split_is_an_error_not_every_image(tiny_root, split):
    cfg = {"root": str(tiny_root), "crop_size": [32, 32]}
    assert len(build_dataset(cfg, "train_labeled_1-8", True)) == 2  # the shipped split: 16 / 8
    with pytest.raises(DatasetError, match=rf"split '{split}': split file .*splits/{split}\.txt not found") as err:
        build_dataset(cfg, split, True)
    assert "train_labeled_1-8" in str(err.value)  # the splits that are there are listed
    if split == "train_labled_1-8":
        assert "did you mean 'train_labeled_1-8'?" in str(err.value)
    assert len(build_dataset(cfg, "train", True)) == 16  # a plain subset without a file: every image


def test_cli_misspelled_split_one_line(write_cfg):
    out = _cli("segproto.train", str(write_cfg()), "--cfg-options", "data.train_split=train_labled_1-8")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "train_labled_1-8" in out.stderr


def test_a_bad_label_in_the_val_split_fails_before_the_first_iteration(copied_root, tmp_path):
    from PIL import Image
    import numpy as np

    bad = sorted((copied_root / "ann_dir/val").glob("*.png"))[-1]
    lab = np.array(Image.open(bad))
    lab[0, 0] = 77  # not a class, not ignore
    Image.fromarray(lab).save(bad)
    wd = tmp_path / "wd"
    with pytest.raises(DatasetError, match=rf"{bad.name}: label values \[77\]"):
        Trainer(load_config(_cfg(copied_root, tmp_path)), wd)
    assert not wd.exists() or not any(wd.iterdir())  # nothing written, no iteration run


def test_an_empty_val_split_fails_before_training(copied_root, tmp_path):
    (copied_root / "splits/val.txt").write_text("")
    with pytest.raises(DatasetError, match=r"data.val_split 'val' is empty: no images in .*splits/val.txt"):
        Trainer(load_config(_cfg(copied_root, tmp_path)), tmp_path / "wd")


def test_scalars_jsonl_is_strict_json(tmp_path):
    w = ScalarWriter(tmp_path)
    w.write({"mode": "val", "iter": 3, "mIoU": float("nan"), "aAcc": float("inf"), "mAcc": 1.5})

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    rec = json.loads((tmp_path / "scalars.jsonl").read_text(), parse_constant=refuse)
    assert rec == {"mode": "val", "iter": 3, "mIoU": None, "aAcc": None, "mAcc": 1.5}


def test_failed_resume_leaves_config_yaml_and_says_why(tiny_root, tmp_path):
    wd = tmp_path / "wd"
    Trainer(load_config(_cfg(tiny_root, tmp_path)), wd).run()
    kept = (wd / "config.yaml").read_bytes()
    # another method, another class count, another train.iters: each refused in one line
    cases = [({"method": {"name": "pico"}}, r"trained with method 'ce', 22 classes.*this config has method 'pico'"),
             ({"data": {"level": 1, "taxonomy": "taxonomy.yaml"}},
              r"trained with method 'ce', 22 classes.*this config has method 'ce', 7 classes"),
             ({"train": {"iters": 9}}, r"trained with train.iters=6 .*this config has train.iters=9"),
             ({"train": {"iters": 2}}, r"trained with train.iters=6 .*this config has train.iters=2")]
    for over, msg in cases:
        cfg = load_config(_cfg(tiny_root, tmp_path, "other.yaml", **over))
        with pytest.raises((CheckpointError, ValueError), match=msg):
            Trainer(cfg, wd, resume=True)
        assert (wd / "config.yaml").read_bytes() == kept
    # load_from (weights only) with another class count: the same one-line summary
    cfg = load_config(_cfg(tiny_root, tmp_path, "ft.yaml", data={"level": 1, "taxonomy": "taxonomy.yaml"},
                           train={"load_from": str(wd / "iter_6.pth")}))
    with pytest.raises(CheckpointError, match=r"iter_6.pth: trained with method 'ce', 22 classes"):
        Trainer(cfg, tmp_path / "ft")
    out = _cli("segproto.train", str(_cfg(tiny_root, tmp_path, "pico.yaml", method={"name": "pico"})),
               "--work-dir", str(wd), "--resume")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "trained with method 'ce'" in out.stderr
    assert (wd / "config.yaml").read_bytes() == kept


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".iter_1.pth.tmp-{int(dead.stdout)}"  # its process has exited
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".iter_1.pth.tmp-{os.getppid()}"  # a live process may still be writing it
    live.write_bytes(b"y")
    save_checkpoint({"model": {"w": torch.ones(1)}, "meta": {"iter": 2}}, tmp_path, 2, -1, best=False)
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["iter_2.pth",
                                                                                      "last_checkpoint"]


def test_a_failed_save_names_the_intact_checkpoint(tmp_path, monkeypatch):
    import errno

    save_checkpoint({"model": {"w": torch.ones(2)}, "meta": {"iter": 1}}, tmp_path, 1, -1, best=False)

    def full(obj, f, *a, **k):
        f.write(b"part")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match=r"cannot save checkpoint .*iter_2.pth: no space left on device; "
                                              r"the latest checkpoint is still .*iter_1.pth"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "meta": {"iter": 2}}, tmp_path, 2, -1, best=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_1.pth", "last_checkpoint"]


def test_resume_drops_a_scalars_line_cut_by_a_kill(tmp_path):
    (tmp_path / "scalars.jsonl").write_text('{"mode": "train", "iter": 2, "loss": 1.0}\n{"mode": "val", "it')
    ScalarWriter(tmp_path, resume_iter=3).write({"mode": "train", "iter": 4, "loss": 0.5})
    assert [json.loads(ln)["iter"] for ln in (tmp_path / "scalars.jsonl").read_text().splitlines()] == [2, 4]


def test_cli_bad_paths_are_one_line(write_cfg, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cfg = write_cfg()
    for args, code, msg in [
        ((tmp_path / "missing.yaml",), 2, "missing.yaml: cannot read config file"),
        ((tmp_path,), 2, "cannot read config file"),
        ((cfg, "--work-dir", a_file), 1, f"work dir {a_file} exists and is not a directory"),
        ((cfg, "--work-dir", tmp_path / "w1", "--cfg-options", f"data.root={a_file}"), 1,
         f"data.root {a_file} exists and is not a directory"),
        ((cfg, "--work-dir", tmp_path / "w2", "--resume", a_file), 1, "the file is empty (0 bytes)"),
        ((cfg, "--work-dir", tmp_path / "w3", "--resume", tmp_path / "nope.pth"), 1, "checkpoint not found"),
    ]:
        out = _cli("segproto.train", *map(str, args))
        assert out.returncode == code, (args, out.stderr[-2000:])
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
        assert msg in out.stderr, (msg, out.stderr)
    out = _cli("segproto.train", str(cfg), "--work-dir", str(a_file), "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr  # --debug shows it
