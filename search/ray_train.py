"""Multi-worker sweep trials (``search/sweep.py --workers-per-trial N``, N > 1).

Each Tune trial is a small driver (no CPU reserved) that runs a Ray Train ``TorchTrainer``
of N workers (:func:`segproto.launch.fit`: DDP over the workers, gloo on CPU, NCCL on GPU). Every
evaluation reaches Tune through Ray Train's ``TuneReportCallback`` (``iter``, ``mIoU``, ``aAcc``,
``mAcc``), so ASHA stops trials as it does single-process ones. Ray Train keeps the trial's
checkpoints in ``EXPERIMENT/trial_<id>/ray_train_<id>/`` and restarts a failed worker group from the
latest one (``--max-failures`` times); a trial that Tune retries (its driver was lost) or resumes
(``--resume``) starts a ``TorchTrainer`` of the same name there, which continues from that checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping, Optional

from search.space import apply_params
from segproto.config import config_from_dict, config_to_dict
from segproto.launch import PLACEMENT_STRATEGIES

DRIVER_MEMORY = 256 * 2**20  # bytes reserved for a trial's driver process (it reserves no CPU)


def add_args(p: argparse.ArgumentParser) -> None:
    """``--workers-per-trial`` and the per-worker resources."""
    p.add_argument("--workers-per-trial", type=int, default=1,
                   help="DDP workers per trial, through Ray Train (default 1: the trial is one process "
                        "with --cpus-per-trial / --gpus-per-trial)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="--workers-per-trial > 1: CPUs per worker (also its torch threads); default 1")
    p.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="--workers-per-trial > 1: GPUs per worker (NCCL when > 0, gloo otherwise); default 0")
    p.add_argument("--placement-strategy", choices=PLACEMENT_STRATEGIES, default="PACK",
                   help="--workers-per-trial > 1: placement of a trial's workers over the nodes (Ray's "
                        "placement group strategy; SPREAD/STRICT_SPREAD put them on different nodes); default PACK")


def check_args(args: argparse.Namespace) -> None:
    """Raises ValueError for options that do not go together."""
    if args.workers_per_trial < 1 or args.cpus_per_worker <= 0 or args.gpus_per_worker < 0:
        raise ValueError("--workers-per-trial must be >= 1, --cpus-per-worker > 0 and --gpus-per-worker >= 0")
    if args.workers_per_trial > 1 and (args.cpus_per_trial != 1.0 or args.gpus_per_trial != 0.0):
        raise ValueError("with --workers-per-trial > 1 the resources are per worker: use --cpus-per-worker and "
                         "--gpus-per-worker instead of --cpus-per-trial / --gpus-per-trial")


def trainable(args: argparse.Namespace, trial_cfg: Mapping[str, Any], experiment: str) -> Optional[Any]:
    """The Tune trainable of a multi-worker sweep; ``None`` for one worker per trial."""
    if args.workers_per_trial == 1:
        return None
    from ray import tune

    launch = {"workers": args.workers_per_trial, "cpus_per_worker": args.cpus_per_worker,
              "gpus_per_worker": args.gpus_per_worker, "placement_strategy": args.placement_strategy,
              "max_failures": args.max_failures, "num_to_keep": args.num_to_keep}
    from ray.tune.trainable.function_trainable import wrap_function

    function = wrap_function(tune.with_parameters(run_ddp_trial, base=trial_cfg, experiment=experiment, launch=launch))

    class DDPTrial(function):  # type: ignore[misc, valid-type]
        """The trial driver; when Tune stops it (ASHA), the workers' placement group goes with it.

        Ray Train removes the placement group when a run ends; a driver that Tune stops ends its
        run's controller abruptly, and Ray Train's cleaner of abandoned placement groups needs the
        Ray dashboard's state API (``ray[default]``). Without it the stopped trial's workers would
        keep their CPUs and GPUs reserved until the sweep ends, and the next trials would wait.
        """

        def cleanup(self) -> None:
            try:
                _remove_placement_groups()
            finally:
                super().cleanup()

    # The trial driver only waits on its workers: it reserves memory, no CPU (a CPU share would
    # leave too few CPUs for the workers' placement group, which Ray Train reserves all at once).
    return tune.with_resources(DDPTrial, {"cpu": 0, "memory": DRIVER_MEMORY})


class _PlacementGroups:
    """The placement groups of one trial's worker groups (rank 0 adds its own at every start)."""

    def __init__(self) -> None:
        self.groups: list = []

    def add(self, group: Any) -> None:
        if group is not None:
            self.groups.append(group)

    def get(self) -> list:
        return list(self.groups)


_REGISTRY: list = []  # the trial driver's registry actor (one trial per driver process)


def _remove_placement_groups() -> None:
    """Removes the placement groups of this driver's trial (those a finished run removed already
    are skipped)."""
    import ray
    from ray.util import remove_placement_group

    while _REGISTRY:
        registry = _REGISTRY.pop()
        try:
            groups = ray.get(registry.get.remote(), timeout=30)
        except Exception:  # noqa: BLE001  (the registry is gone: nothing known to remove)
            continue
        for group in groups:
            try:
                remove_placement_group(group)
            except Exception:  # noqa: BLE001  (already removed)
                pass


def run_ddp_trial(config: Mapping[str, Any], base: Mapping[str, Any], experiment: str,
                  launch: Mapping[str, Any]) -> None:
    """Tune function trainable: trains ``base`` with the sampled ``config`` on Ray Train workers.

    Args:
        config: The sampled values, keyed by dotted config key.
        base: The resolved config every trial starts from (absolute paths, aligned intervals).
        experiment: The Tune experiment's path or URI (the trial's Ray Train run is kept inside).
        launch: ``workers``, ``cpus_per_worker``, ``gpus_per_worker``, ``placement_strategy``,
            ``max_failures``, ``num_to_keep``.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from segproto.launch import fit

    import ray

    trial_id = tune.get_context().get_trial_id()
    source = f"trial {trial_id}"
    cfg = config_from_dict(apply_params(base, config), source)
    registry = ray.remote(num_cpus=0)(_PlacementGroups).remote()
    _REGISTRY.append(registry)
    fit(config_to_dict(cfg), storage_path=f"{experiment.rstrip('/')}/trial_{trial_id}", name=f"ray_train_{trial_id}",
        source=source, callbacks=[TuneReportCallback()], placement_groups=registry, **launch)
