"""Multi-worker training on a Ray cluster: Ray Train's ``TorchTrainer`` runs the one :class:`Trainer`
on N workers (DDP: gloo on CPU, NCCL on GPU), reports every evaluation and its checkpoint to Ray
Train, and restarts a failed worker group from the last reported checkpoint.

Two entry points share this code path:

- ``python -m segproto.train CONFIG --launcher ray --workers N`` (:func:`run_on_ray`): one run,
  outputs in the work dir as with ``torchrun``;
- multi-worker sweep trials (``search/sweep.py --workers-per-trial N``, ``search/ray_train.py``):
  :func:`fit` inside a Ray Tune trial, whose reports reach Tune through Ray Train's
  ``TuneReportCallback``.

Ray Train sets up the process group and the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
the CUDA device); :func:`segproto.utils.dist.init_distributed` then finds it initialised, so every
rank runs exactly what it runs under ``torchrun``: the same seeds (``seed + rank``), the same draws,
the same buffer broadcasts. Ray is imported only when one of these functions runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from segproto.config import config_from_dict, config_to_dict

#: Report keys: ``iter`` (the training iteration: ASHA's time axis) and the evaluation's scalars.
TIME_ATTR = "iter"
METRIC = "mIoU"
RAY_TRAIN_DIR = "ray_train"  # the launcher's Ray Train storage, inside the work dir
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


# ------------------------------------------------------------------ on every worker
def worker_loop(config: Mapping[str, Any]) -> None:
    """The function every Ray Train worker runs: the :class:`Trainer` of ``config["cfg"]``.

    ``config`` keys: ``cfg`` (a config dict), ``source`` (its name in messages), ``work_dir`` (rank
    0's output directory; ``None``: a fresh directory under the worker's working directory, as in a
    sweep trial), ``keep_checkpoints`` (rank 0 keeps its ``iter_N.pth`` in the work dir and reports
    a copy; otherwise the file moves into the report and no ``.pth`` stays behind) and ``resume``
    (a checkpoint every rank can read, used when Ray Train has none to restore).

    A restarted worker group (a worker or node lost) continues from the last checkpoint Ray Train
    registered, exactly (model, optimizer, scheduler, every rank's RNG, data position, memories).
    """
    import ray.train

    from segproto.engine import Trainer
    from segproto.engine.checkpoint import run_files

    cfg = config_from_dict(dict(config["cfg"]), config["source"])
    rank = ray.train.get_context().get_world_rank()
    registry = config.get("placement_groups")
    if registry is not None and rank == 0:  # the trial driver removes it if Tune stops the trial
        ray.get(registry.add.remote(ray.util.get_current_placement_group()))
    if config["work_dir"] and rank == 0:
        work_dir = Path(config["work_dir"])
    else:  # other ranks write nothing; a trial's rank 0 keeps its logs here
        work_dir = Path(tempfile.mkdtemp(dir=Path.cwd(), prefix=f"rank{rank}-"))
    keep = bool(config.get("keep_checkpoints"))

    def report(it: int, metrics: dict, ckpt: Optional[Path]) -> None:
        _report(it, metrics, ckpt, work_dir, keep)

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        if not config.get("resume") and work_dir == Path(config["work_dir"] or ""):
            # The launcher found the work dir free of run files: any now are a failed attempt's.
            for p in run_files(work_dir):
                p.unlink()
        _run(Trainer(cfg, work_dir, resume=config.get("resume"), on_eval=report), config)
        return
    with checkpoint.as_directory() as d:
        files = sorted(Path(d).glob("iter_*.pth"))
        if len(files) != 1:
            raise FileNotFoundError(f"Ray Train checkpoint {d} should hold one iter_N.pth, found "
                                    f"{[f.name for f in files]}")
        if _iteration(files[0]) >= cfg.train.iters and not config["work_dir"]:
            return  # a trial that ended after its last report: Tune has that report
        trainer = Trainer(cfg, work_dir, resume=str(files[0]), on_eval=report)  # loads the file here
    _run(trainer, config)


def _run(trainer: Any, config: Mapping[str, Any]) -> None:
    trainer.run()
    if not config["work_dir"] or trainer.rank != 0:
        for leftover in trainer.work_dir.glob("*.pth"):  # the reports took the checkpoints
            leftover.unlink()


def _iteration(ckpt: Path) -> int:
    """N of a trainer checkpoint ``iter_N.pth``."""
    return int(ckpt.stem.removeprefix("iter_"))


def _report(it: int, metrics: Mapping[str, Any], ckpt: Optional[Path], work_dir: Path, keep: bool) -> None:
    """Every rank reports each evaluation (Ray Train's report is collective); rank 0 attaches the
    iteration's checkpoint, which Ray Train persists to its storage."""
    import ray.train

    from segproto.engine.trainer import eval_scalars

    result = {TIME_ATTR: it, **eval_scalars(dict(metrics))}
    if ckpt is None:
        ray.train.report(result)
        return
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".report-") as d:
        target = Path(d) / ckpt.name
        if keep:
            try:
                os.link(ckpt, target)
            except OSError:
                shutil.copy2(ckpt, target)
        else:
            os.replace(ckpt, target)
            for leftover in work_dir.glob("*.pth"):
                leftover.unlink()
        ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(d))


# ------------------------------------------------------------------ on the driver
def scaling_config(workers: int, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                   placement_strategy: str = "PACK") -> Any:
    """Ray Train's ``ScalingConfig``: ``workers`` workers of ``cpus_per_worker`` CPUs and
    ``gpus_per_worker`` GPUs each (NCCL when GPUs are requested, else gloo)."""
    from ray.train import ScalingConfig

    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
    return ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources,
                         placement_strategy=placement_strategy)


def fit(cfg_dict: Mapping[str, Any], *, workers: int, storage_path: str, name: str,
        cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, placement_strategy: str = "PACK",
        max_failures: int = 0, num_to_keep: int = 1, work_dir: Optional[str] = None,
        keep_checkpoints: bool = False, resume: Optional[str] = None, source: str = "config",
        callbacks: Sequence[Any] = (), placement_groups: Any = None) -> Any:
    """Trains ``cfg_dict`` on ``workers`` Ray Train workers; returns Ray Train's ``Result``.

    Ray Train keeps the run in ``storage_path/name`` (reported checkpoints: the ``num_to_keep``
    best by mIoU and the latest); a run of the same name there is continued from its latest
    checkpoint (how a retried or resumed sweep trial goes on). A failed worker group is restarted
    ``max_failures`` times, each from the latest checkpoint. ``placement_groups``: an actor with an
    ``add(placement_group)`` method, told the workers' placement group of each start.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    loop_config = {"cfg": dict(cfg_dict), "source": source, "work_dir": work_dir, "resume": resume,
                   "keep_checkpoints": keep_checkpoints, "placement_groups": placement_groups}
    trainer = TorchTrainer(
        worker_loop, train_loop_config=loop_config,
        scaling_config=scaling_config(workers, cpus_per_worker, gpus_per_worker, placement_strategy),
        run_config=RunConfig(
            name=name, storage_path=storage_path, failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep, checkpoint_score_attribute=METRIC,
                                               checkpoint_score_order="max"),
            callbacks=list(callbacks)))
    return trainer.fit()


def add_launcher_args(p: argparse.ArgumentParser) -> None:
    """``--launcher ray`` and its options (``segproto.train``)."""
    g = p.add_argument_group("Ray launcher (docs/distributed.md)")
    g.add_argument("--launcher", choices=("none", "ray"), default="none",
                   help="none: this process (or the torchrun-launched processes); ray: --workers Ray Train workers")
    g.add_argument("--workers", type=int, default=2, help="--launcher ray: number of DDP workers (default 2)")
    g.add_argument("--address", help="--launcher ray: the Ray cluster ('auto' on a cluster node, "
                   "'ray://HEAD:10001'); default: a local Ray on this machine")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="--launcher ray: CPUs per worker (default 1)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="--launcher ray: GPUs per worker (default 0: CPU and gloo; > 0: NCCL)")
    g.add_argument("--placement-strategy", choices=PLACEMENT_STRATEGIES, default="PACK",
                   help="--launcher ray: how the workers are placed over the nodes (default PACK)")
    g.add_argument("--max-failures", type=int, default=0,
                   help="--launcher ray: restarts of a failed worker group, each from its last checkpoint (default 0)")


def check_launcher_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """Errors (through ``p.error``) for values the Ray launcher cannot take."""
    if a.launcher != "ray":
        return
    if a.workers < 1 or a.cpus_per_worker <= 0 or a.gpus_per_worker < 0 or a.max_failures < 0:
        p.error("--launcher ray needs --workers >= 1, --cpus-per-worker > 0, --gpus-per-worker >= 0 "
                "and --max-failures >= 0")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        p.error("--launcher ray starts its own workers: run it with python, not torchrun")


def run_on_ray(cfg: Any, work_dir: Union[str, Path], args: argparse.Namespace) -> dict:
    """``segproto.train --launcher ray``: one run of ``cfg`` on ``args.workers`` Ray Train workers.

    Rank 0 writes the work dir as under ``torchrun`` (config, scalars, checkpoints, metrics);
    ``--resume``/``--force`` behave the same. Ray Train keeps the reported checkpoints in
    ``WORK_DIR/ray_train`` for restarts of a failed worker group during this run, and the folder is
    removed when the run succeeds. On several nodes the work dir must be a path every node mounts
    (rank 0 may run on any node). Returns the last evaluation's scalars.
    """
    import ray

    from segproto.engine.checkpoint import find_last_checkpoint, remove_stale_temps, run_files
    from segproto.engine.trainer import WorkDirError

    work_dir = Path(work_dir).expanduser().absolute()
    resume: Optional[str] = None
    if args.resume is True:
        found = find_last_checkpoint(work_dir)
        if found is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {work_dir} (no last_checkpoint or iter_*.pth)")
        resume = str(found)
    elif args.resume:
        resume = str(Path(args.resume).expanduser().absolute())
    old = run_files(work_dir)
    if resume is None and old:  # as Trainer does, but before any worker starts
        if not args.force:
            shown = ", ".join(p.name for p in old[:4]) + (f" and {len(old) - 4} more" if len(old) > 4 else "")
            raise WorkDirError(f"work dir {work_dir} holds another run ({shown}); continue it with --resume, "
                               "replace it with --force, or choose another --work-dir")
        for p in old:
            p.unlink(missing_ok=True)
        remove_stale_temps(work_dir)
    storage = work_dir / RAY_TRAIN_DIR
    shutil.rmtree(storage, ignore_errors=True)  # restarts within this run only; --resume reads the work dir
    work_dir.mkdir(parents=True, exist_ok=True)
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address)  # local: with the dashboard, whose state API Ray Train uses
    try:
        result = fit(config_to_dict(cfg), workers=args.workers, storage_path=str(work_dir), name=RAY_TRAIN_DIR,
                     cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                     placement_strategy=args.placement_strategy, max_failures=args.max_failures,
                     work_dir=str(work_dir), keep_checkpoints=True, resume=resume, source=str(args.config))
    finally:
        if started:
            ray.shutdown()
    shutil.rmtree(storage, ignore_errors=True)
    return dict(result.metrics or {})
