"""One sweep trial: a segproto training run inside a Ray Tune worker.

The trial trains in the worker's own working directory (Ray gives every trial one), reports
``mIoU`` at each evaluation with that iteration's checkpoint, and continues an interrupted or
failed trial exactly from the checkpoint Tune hands back (``Trainer(..., resume=file)``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

from search.space import apply_params
from segproto.config import config_from_dict

METRIC = "mIoU"
TIME_ATTR = "iter"  # training iteration of the report; ASHA's time axis


def run_trial(config: Mapping[str, Any], base: Mapping[str, Any]) -> None:
    """Tune function trainable: trains ``base`` (a plain config dict) with the sampled ``config``.

    Args:
        config: The sampled values, keyed by dotted config key.
        base: The resolved config every trial starts from (absolute paths, aligned intervals).
    """
    from ray import tune

    from segproto.engine import Trainer

    cfg = config_from_dict(apply_params(base, config), f"trial {tune.get_context().get_trial_id()}")
    work_dir = Path.cwd()
    resume = _restore(tune.get_checkpoint(), work_dir)
    if resume is not None and _iteration(resume) >= cfg.train.iters:
        resume.unlink()  # it stopped after its last report, which Tune has with this checkpoint
        return
    # the trial owns its folder: a trial restarted without a checkpoint replaces its own earlier outputs
    Trainer(cfg, work_dir, resume=resume, force=resume is None,
            on_eval=lambda it, metrics, ckpt: _report(it, metrics, ckpt, work_dir)).run()


def _iteration(ckpt: Path) -> int:
    """N of a trainer checkpoint ``iter_N.pth``."""
    return int(ckpt.stem.removeprefix("iter_"))


def _restore(checkpoint: Any, work_dir: Path) -> Optional[Path]:
    """Copies the checkpoint file Tune restored (if any) into ``work_dir``; returns its path."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        files = sorted(Path(d).glob("iter_*.pth"))
        if len(files) != 1:
            raise FileNotFoundError(f"Tune checkpoint {d} should hold one iter_N.pth, found {[f.name for f in files]}")
        return Path(shutil.copy2(files[0], work_dir / files[0].name))


def _report(it: int, metrics: Mapping[str, Any], ckpt: Optional[Path], work_dir: Path) -> None:
    """Reports one evaluation to Tune with the checkpoint of that iteration.

    The checkpoint file is moved into the reported directory (Tune persists it to the storage
    path and keeps ``num_to_keep`` of them), and the trainer's other ``.pth`` files are removed,
    so the worker's disk holds no checkpoint between evaluations.
    """
    from ray import tune

    result = {TIME_ATTR: it, METRIC: metrics["mIoU"], "aAcc": metrics["aAcc"], "mAcc": metrics["mAcc"]}
    if ckpt is None:
        tune.report(result)
        return
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".report-") as d:
        os.replace(ckpt, Path(d) / ckpt.name)
        for leftover in work_dir.glob("*.pth"):
            leftover.unlink()
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
