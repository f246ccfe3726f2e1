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
    resume, unreported = _restore(tune.get_checkpoint(), work_dir)
    if resume is not None and not unreported and _iteration(resume) >= cfg.train.iters:
        resume.unlink()  # it stopped after its last report, which Tune has with this checkpoint
        return
    # the trial owns its folder: a trial restarted without a checkpoint replaces its own earlier outputs
    trainer = Trainer(cfg, work_dir, resume=resume, force=resume is None,
                      on_eval=lambda it, metrics, ckpt: _report(it, metrics, ckpt, work_dir))
    if unreported:  # Tune's history lacks this checkpoint's report: evaluate its weights and report it again
        _report(trainer.start_iter, trainer.evaluate(), resume, work_dir)
    trainer.run()


def _iteration(ckpt: Path) -> int:
    """N of a trainer checkpoint ``iter_N.pth``."""
    return int(ckpt.stem.removeprefix("iter_"))


def _restore(checkpoint: Any, work_dir: Path) -> tuple[Optional[Path], bool]:
    """Copies the trial's checkpoint into ``work_dir``: ``(path, unreported)``, or ``(None, False)``
    to start over.

    Normally that is the checkpoint Tune hands back. Tune deletes a trial's older checkpoint
    (``num_to_keep``) as soon as it registers a newer one, but records the newer one only at its
    next experiment snapshot; a sweep killed in between resumes with a checkpoint folder that is
    gone or emptied. The newer checkpoint is then complete beside it in the trial's storage folder,
    and Tune's restored history lacks its report (``unreported``: the caller reports it again).
    """
    if checkpoint is None:
        return None, False
    newest_first = [(newer, True) for newer in reversed(_newer_checkpoints(checkpoint))]
    for candidate, unreported in [(checkpoint, False), *newest_first]:
        with candidate.as_directory() as d:
            found = _checkpoint_file(Path(d))
            if found is not None:
                return Path(shutil.copy2(found, work_dir / found.name)), unreported
    return None, False


def _checkpoint_file(folder: Path) -> Optional[Path]:
    """The folder's one ``iter_N.pth`` if it holds exactly one and that one loads, else None."""
    from segproto.engine import CheckpointError, load_checkpoint

    files = sorted(folder.glob("iter_*.pth")) if folder.is_dir() else []
    if len(files) != 1:
        return None
    try:
        load_checkpoint(files[0])
    except CheckpointError:  # a truncated or foreign file is not one to resume from
        return None
    return files[0]


def _newer_checkpoints(checkpoint: Any) -> list[Any]:
    """The ``checkpoint_NNNNNN`` folders beside ``checkpoint`` in Tune's storage with a larger
    index, in index order (Tune numbers a trial's checkpoints in the order it reports them)."""
    import pyarrow.fs
    from ray import tune

    path = checkpoint.path.rstrip("/")
    parent, name = path.rsplit("/", 1)
    if not name.startswith("checkpoint_"):
        return []
    infos = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    newer = sorted(i.path for i in infos if i.type == pyarrow.fs.FileType.Directory
                   and i.base_name.startswith("checkpoint_") and i.base_name > name)
    return [tune.Checkpoint(path=p, filesystem=checkpoint.filesystem) for p in newer]


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
