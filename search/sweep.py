"""Ray Tune sweep of a segproto config (docs/sweeps.md)::

    python search/sweep.py CONFIG --space SPACE.yaml --num-samples N --work-dir DIR [options]

Seeded Optuna TPE behind a concurrency limiter, ASHA early stopping on the validation mIoU of
each evaluation, per-trial CPU/GPU resources, retries from the last checkpoint, ``--resume``.
Everything that can fail without Ray (config, overrides, space keys and distributions, each edge
value against the schema, the dataset) is checked before Ray starts. Outputs in DIR:
``results.csv``, ``best_config.yaml``, ``mIoU_vs_params.png``.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

if __package__ in (None, ""):  # run as `python search/sweep.py`: make the `search` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search import ray_train, results
from search.space import Param, SearchSpace, first_rung_problems, load_space
from search.trial import METRIC, TIME_ATTR, run_trial
from segproto.cli import add_config_args, one_line
from segproto.config import (ConfigError, config_from_dict, config_to_dict, get_by_dotted, load_config,
                             set_by_dotted)
from segproto.config.yaml_io import dump_yaml, read_yaml
from segproto.models.backbones import PRETRAINED_KEYWORDS

#: Config keys holding paths relative to the launch directory (trials run in their own directory).
PATH_KEYS = ("data.root", "model.pretrained", "train.load_from")
SWEEP_BASE = "sweep_base.yaml"    # the config every trial starts from; --resume must rebuild the same
SWEEP_SPACE = "sweep_space.yaml"  # a copy of the space file; --resume must give the same space


def _number(kind: type, minimum: float, strict: bool = False) -> Callable[[str], Any]:
    """An argparse type: ``kind`` (int/float) that is ``>= minimum`` (``> minimum`` if strict)."""
    def parse(text: str) -> Any:
        value = kind(text)
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {minimum}, got {text}")
        return value
    return parse


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python search/sweep.py",
                                description="Ray Tune sweep of a segproto config (docs/sweeps.md).")
    add_config_args(p)
    p.add_argument("--space", required=True, help="search-space YAML: dotted config keys -> distributions")
    p.add_argument("--num-samples", type=_number(int, 1), required=True, help="number of trials")
    p.add_argument("--work-dir", required=True, help="sweep directory: the Tune experiment (unless "
                   "--storage-path), results.csv, best_config.yaml, mIoU_vs_params.png")
    p.add_argument("--address", help="join a running Ray cluster: 'auto' (on a cluster node) or "
                   "'ray://HEAD:10001'; default: start a local Ray on this machine")
    p.add_argument("--cpus-per-trial", type=_number(float, 0, strict=True), default=1.0,
                   help="CPUs per trial (also its torch threads); default 1")
    p.add_argument("--gpus-per-trial", type=_number(float, 0), default=0.0,
                   help="GPUs per trial; a fraction (0.5) shares a GPU between trials; default 0")
    p.add_argument("--scheduler", choices=("asha", "fifo"), default="asha",
                   help="asha: stop trials early on mIoU; fifo: run every trial to the end")
    p.add_argument("--grace-period", type=_number(int, 1),
                   help="ASHA: iterations a trial runs before it can be stopped (default: train.eval_interval)")
    p.add_argument("--reduction-factor", type=_number(float, 1, strict=True), default=2.0,
                   help="ASHA: each rung keeps the best 1/FACTOR of the trials that reach it (default 2)")
    p.add_argument("--max-concurrent", type=_number(int, 1), default=4,
                   help="trials running at once (the searcher waits for results beyond it); default 4")
    p.add_argument("--max-failures", type=_number(int, 0), default=1,
                   help="retries of a failed trial, each from its last checkpoint; default 1")
    p.add_argument("--num-to-keep", type=_number(int, 1), default=1,
                   help="checkpoints kept per trial, best mIoU first (the latest is kept as well); default 1")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE searcher; default 0")
    p.add_argument("--storage-path", help="where Tune keeps the experiment, as STORAGE/<work-dir name>: a "
                   "directory every node sees, or a URI (s3://...); default: the work dir's parent")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep of this work dir (same command otherwise)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    ray_train.add_args(p)
    return p.parse_args(argv)


# ------------------------------------------------------------------ checks before Ray
def absolute_paths(cfg_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with the :data:`PATH_KEYS` resolved against the launch directory."""
    out = copy.deepcopy(dict(cfg_dict))
    for key in PATH_KEYS:
        value = get_by_dotted(out, key)
        if value is not None and not (key == "model.pretrained" and value in PRETRAINED_KEYWORDS):
            set_by_dotted(out, key, str(Path(value).expanduser().absolute()))
    return out


def trial_base(base: Mapping[str, Any]) -> dict[str, Any]:
    """The config every trial starts from: a checkpoint at each evaluation (what Tune restores),
    one local checkpoint, no progress bar."""
    out = copy.deepcopy(dict(base))
    for key, value in (("train.checkpoint_interval", base["train"]["eval_interval"]),
                       ("train.max_keep_ckpts", 1), ("train.progress_bar", False), ("work_dir", None)):
        set_by_dotted(out, key, value)
    return out


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], SearchSpace]:
    """Loads the config (absolute paths) and the space, checks every edge value of the space
    against the schema and makes sure the dataset is there (a synthetic one is generated once,
    here, not by concurrent trials).

    With ASHA, the first rung must come after some term of the method can have started
    (:func:`search.space.first_rung_problems`); a term that may start after it is a warning.

    Raises:
        ConfigError, FileNotFoundError, KeyError, ValueError, DatasetError: before any trial.
        SweepError: ASHA's first rung before every term of the method starts.
    """
    from segproto.engine.builder import build_split

    base = absolute_paths(config_to_dict(load_config(args.config, args.cfg_options)))
    space = load_space(args.space)
    space.check_against(base)
    if args.scheduler == "asha":
        errors, warnings = first_rung_problems(space, base, args.grace_period or base["train"]["eval_interval"])
        if errors:
            raise SweepError("; ".join(errors))
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr)
    cfg = config_from_dict(base, args.config)
    build_split(cfg, cfg.data.train_split, train=True)
    build_split(cfg, cfg.data.val_split, train=False)
    return base, space


def _flat(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def check_same_sweep(work_dir: Path, base: Mapping[str, Any], space: SearchSpace, resume: bool) -> None:
    """A new sweep records its trial config and space in ``work_dir``; ``--resume`` must give the same
    values to the keys both configs have, and the same space.

    Raises:
        ConfigError: on ``--resume``, naming the keys whose value or distribution changed.
    """
    base_file, space_file = work_dir / SWEEP_BASE, work_dir / SWEEP_SPACE
    if not resume:
        dump_yaml(base, base_file)
        dump_yaml({p.key: {p.kind: list(p.args)} for p in space.params}, space_file)
        return
    if not base_file.is_file():
        raise ConfigError([f"--resume: {base_file} not found; is {work_dir} a sweep directory?"])
    old_base, new_base = dict(_flat(read_yaml(str(base_file)))), dict(_flat(base))
    # Keys only one side has come from a newer (or older) segproto, not from a change of this sweep.
    changed = [f"{k} (was {old_base[k]!r}, now {new_base[k]!r})"
               for k in sorted(old_base.keys() & new_base.keys()) if old_base[k] != new_base[k]]
    old_params = {p.key: p for p in load_space(str(space_file)).params}
    new_params = {p.key: p for p in space.params}
    changed += [f"space {k}" for k in sorted(old_params.keys() | new_params.keys())
                if old_params.get(k) != new_params.get(k)]
    if changed:
        raise ConfigError([f"--resume: the config or space differs from the interrupted sweep's ({base_file}, "
                           f"{space_file}) at: {', '.join(changed)}; give the old values with --cfg-options "
                           "(e.g. a default that changed between segproto versions) or start a new work dir"])


# ------------------------------------------------------------------ Ray
class SweepError(Exception):
    """The sweep cannot start or resume (the message says why)."""


def tune_domain(param: Param) -> Any:
    """The Ray Tune distribution of ``param`` (randint's high is included here, excluded in Tune)."""
    from ray import tune

    if param.kind == "choice":
        return tune.choice(list(param.args))
    if param.kind == "randint":
        return tune.randint(param.args[0], param.args[1] + 1)
    if param.kind == "quniform" and param.integer:
        return tune.qrandint(*param.args)
    return getattr(tune, param.kind)(*param.args)  # uniform, loguniform, quniform


def trial_dirname(trial: Any) -> str:
    """Short trial directory names (Tune's default repeats every sampled value)."""
    return f"trial_{trial.trial_id}"


def experiment_location(args: argparse.Namespace, work_dir: Path) -> tuple[str, str]:
    """``(storage path, experiment name)``: the experiment is STORAGE/<work dir name>, by default
    the work dir itself."""
    storage = args.storage_path or str(work_dir.parent)
    if "://" not in storage:
        storage = str(Path(storage).expanduser().absolute())
    return storage, work_dir.name


def new_tuner(trainable: Any, args: argparse.Namespace, space: SearchSpace, train: Mapping[str, Any],
              storage: str, name: str) -> Any:
    """A Tuner: seeded TPE behind a concurrency limiter, ASHA on ``mIoU`` over training iterations
    (or FIFO), retries, and at most ``num_to_keep`` (+ the latest) checkpoints per trial. The ASHA
    rebuilds its rungs from the stored reports on ``--resume`` (``search/asha.py``)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from search.asha import ResumableASHA

    searcher = ConcurrencyLimiter(OptunaSearch(sampler=optuna.samplers.TPESampler(seed=args.seed)),
                                  max_concurrent=args.max_concurrent)
    scheduler = (ResumableASHA(time_attr=TIME_ATTR, max_t=train["iters"], reduction_factor=args.reduction_factor,
                               grace_period=args.grace_period or train["eval_interval"])
                 if args.scheduler == "asha" else FIFOScheduler())
    return tune.Tuner(
        trainable,
        param_space={p.key: tune_domain(p) for p in space.params},
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=args.num_samples, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=args.num_to_keep, checkpoint_score_attribute=METRIC,
                                                    checkpoint_score_order="max")))


def start(args: argparse.Namespace, base: Mapping[str, Any], space: SearchSpace,
          work_dir: Path) -> tuple[Any, str]:
    """Connects to (or starts) Ray; returns the new or restored Tuner and the experiment's path or URI.

    Raises:
        SweepError: a new sweep over an existing one, or ``--resume`` with nothing to resume.
        ConfigError: ``--resume`` with another config or space than the interrupted sweep.
    """
    import ray
    from ray import tune

    import search

    storage, name = experiment_location(args, work_dir)
    experiment = f"{storage.rstrip('/')}/{name}"
    exists = tune.Tuner.can_restore(experiment)
    if args.resume and not exists:
        raise SweepError(f"--resume: no sweep to resume in {experiment}")
    if not args.resume and exists:
        raise SweepError(f"{experiment} already holds a sweep: add --resume to continue it, or pick a new --work-dir")
    if (args.grace_period or 0) > base["train"]["iters"]:
        raise SweepError(f"--grace-period {args.grace_period} is beyond train.iters ({base['train']['iters']})")
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SweepError(f"--work-dir {work_dir}: cannot create the folder ({exc.strerror or exc})") from None
    trial_cfg = trial_base(base)
    check_same_sweep(work_dir, trial_cfg, space, args.resume)
    ray.cloudpickle.register_pickle_by_value(search)  # workers need segproto and Ray, not this checkout
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(include_dashboard=False)
    trainable = ray_train.trainable(args, trial_cfg, experiment) or tune.with_resources(
        tune.with_parameters(run_trial, base=trial_cfg), {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    if args.resume:
        return tune.Tuner.restore(experiment, trainable=trainable), experiment
    return new_tuner(trainable, args, space, base["train"], storage, name), experiment


def collect_rows(experiment: str, iters: int) -> list[results.TrialRow]:
    """One row per trial of the experiment (read back from its storage), in trial-id order."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(experiment)
    rows = []
    for trial in analysis.trials:
        df = analysis.trial_dataframes.get(trial.trial_id)
        reports = df[[TIME_ATTR, METRIC]].to_dict("records") if df is not None and METRIC in df else []
        rows.append(results.trial_row(trial.trial_id, trial.status, trial.config, reports, iters))
    return sorted(rows, key=lambda r: r.trial_id)


# ------------------------------------------------------------------ outputs and entry point
def write_outputs(rows: Sequence[results.TrialRow], space: SearchSpace, base: Mapping[str, Any],
                  work_dir: Path) -> Optional[results.TrialRow]:
    """``results.csv`` always; ``best_config.yaml`` and the plot once a trial has an mIoU. Returns the best row."""
    results.write_csv(rows, space, work_dir / results.RESULTS_CSV)
    best = results.best_row(rows)
    if best is not None:
        results.write_best_config(base, best, work_dir / results.BEST_CONFIG)
        results.plot_params(rows, space, work_dir / results.PLOT)
    return best


def summarize(rows: Sequence[results.TrialRow], best: Optional[results.TrialRow], work_dir: Path) -> None:
    counts = {s: sum(r.status == s for r in rows) for s in results.STATUSES}
    print(f"sweep: {len(rows)} trials (" + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
          + f"); {work_dir / results.RESULTS_CSV}")
    if best is not None:
        values = ", ".join(f"{k}={v!r}" for k, v in best.params.items())
        print(f"best trial {best.trial_id}: mIoU {best.best_miou:.2f} at iteration {best.best_iter} ({values})")
        best_config = work_dir / results.BEST_CONFIG
        print(f"best config: {best_config}  (python -m segproto.train {best_config})")
        print(f"plot: {work_dir / results.PLOT}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs (or resumes) a sweep. Exit status: 0 done; 1 no trial reached an evaluation; 2 bad
    config, space, data or sweep directory (nothing started); 130 interrupted (resume with --resume)."""
    args = parse_args(argv)
    work_dir = Path(args.work_dir).expanduser().absolute()
    try:
        ray_train.check_args(args)
        base, space = prepare(args)
        tuner, experiment = start(args, base, space, work_dir)
    except (ValueError, KeyError, OSError, SweepError) as exc:  # ConfigError, DatasetError: ValueError
        if args.debug:
            raise
        print(f"error: {one_line(exc)} (--debug shows the traceback)", file=sys.stderr)
        return 2
    tuner.fit()
    rows = collect_rows(experiment, base["train"]["iters"])
    best = write_outputs(rows, space, base, work_dir)
    summarize(rows, best, work_dir)
    if any(r.status == "unfinished" for r in rows):
        again = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"]
        print("sweep interrupted; continue it with: " + shlex.join(["python", "search/sweep.py", *again, "--resume"]))
        return 130
    if best is None:
        print("error: no trial reached an evaluation (see the trial errors above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
