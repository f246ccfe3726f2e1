"""HDMNet on the built-in dataset's folds (docs/results.md): stage one, HDMNet with and without
the correlation distillation, each tested at 1 and 5 shots, the untrained prior-mask floor, then a
table.

    python scripts/fewshot.py [--regime quickstart|pretrained128] [--folds 0 1 2 3] [--seeds 0 1 2]
                              [--variants distill no_distill] [--jobs 2] [--threads 1]

Regimes: ``quickstart`` (64 px, ResNet-18 from scratch, ``configs/hdmnet/``) and ``pretrained128``
(128 px, ImageNet EfficientNet-Lite0, ``configs/pretrained128/hdmnet*.yaml``). Per fold ``f``:
``<work>/base_fold<f>`` (the regime's stage-one config, trained once), then the prior floor (the
stage-one backbone's thresholded prior mask, :class:`segproto.models.prior_baseline.PriorBaseline`,
no training) at 1 and 5 shots into ``prior_fold<f>/test_<k>shot.json``, then per variant and
training seed ``s`` ``<work>/<variant>_fold<f>_s<s>`` (1-shot training), then ``python -m
segproto.test`` at ``fewshot.shots`` 1 and 5 (the 1-shot-trained model; ``fewshot.eval_seeds``
episode seeds, 1000 episodes each) into ``test_<k>shot.json``. Finished steps are skipped and an
interrupted training continues from its last checkpoint (``--resume``), so rerunning the command
resumes. Each finished run's small result files are copied to ``<results>/<run>/`` (kept in git;
checkpoints stay in ``work_dirs``). The table (mean ± sample std over training seeds of the
per-run episode-seed means) is built from those copies, printed and written to
``<results>/hdmnet.json``; every run is also recorded in
``benchmarks/results/studies/<regime>_hdmnet.json`` (``scripts/study_tables.py``). A stage one
trained again on another machine is kept, with its floor, under ``<results>/retrained/`` (copied
there by hand); that floor is recorded as a ``prior_only`` run with ``stage_one: retrained`` and its
machine, and the tables compare each trained run with the floor of its fold from the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import MACHINE, machine_record, note_machine, run_logged, train_run, train_seconds_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "benchmarks" / "results" / "studies"
# regime -> (stage-one config, HDMNet config, work dir, results dir)
REGIMES = {
    "quickstart": ("configs/hdmnet/base_quickstart.yaml", "configs/hdmnet/quickstart.yaml",
                   REPO / "work_dirs" / "fewshot", REPO / "benchmarks" / "results" / "fewshot"),
    "pretrained128": ("configs/pretrained128/hdmnet_base.yaml", "configs/pretrained128/hdmnet.yaml",
                      REPO / "work_dirs" / "fewshot_pretrained128",
                      REPO / "benchmarks" / "results" / "fewshot_pretrained128"),
}
REGIME = "quickstart"
BASE_CFG, CFG, OUT, RESULTS = REGIMES[REGIME]
VARIANTS = {"distill": [], "no_distill": ["fewshot.distill_weight=0"]}
SHOTS = (1, 5)
PRIOR_THRESHOLD = 0.5


def set_regime(regime: str) -> None:
    """Points the module's configs and folders at ``regime``."""
    global REGIME, BASE_CFG, CFG, OUT, RESULTS
    REGIME = regime
    BASE_CFG, CFG, OUT, RESULTS = REGIMES[regime]


def _last_checkpoint(wd: Path) -> Path:
    """The checkpoint a finished run's ``last_checkpoint`` file names."""
    return wd / (wd / "last_checkpoint").read_text().strip()


def _train(config: str, wd: Path, overrides: list[str], threads: int) -> None:
    """:func:`study.train_run` of ``config`` into ``wd``, its output in ``<wd>.log`` beside it."""
    train_run(config, wd, overrides, threads, wd.parent / f"{wd.name}.log")


RUN_INFO = ["commit.txt", "threads.txt", "wall_s.txt", MACHINE]
RETRAINED = "retrained"  # RESULTS/retrained/: stage ones (and their floors) trained again on a later machine


def _keep(wd: Path, names: list[str]) -> None:
    """Copy the small result files of the finished run ``wd`` to ``RESULTS/<run>/``."""
    dst = RESULTS / wd.name
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in RUN_INFO and not (wd / name).is_file():  # a run recorded without them keeps none
            continue
        shutil.copyfile(wd / name, dst / name)


def base_run(fold: int, threads: int) -> Path:
    """Stage one of ``fold`` (skipped when its metrics.json exists)."""
    wd = OUT / f"base_fold{fold}"
    if not (wd / "metrics.json").is_file():
        _train(BASE_CFG, wd, [f"fewshot.fold={fold}"], threads)
        print(f"done base_fold{fold}", flush=True)
    _keep(wd, ["metrics.json", *RUN_INFO])
    return wd


def _stage_one(fold: int) -> list[str]:
    return [f"fewshot.fold={fold}", f"fewshot.backbone_checkpoint={_last_checkpoint(OUT / f'base_fold{fold}')}"]


def prior_run(fold: int, threads: int) -> Path:
    """The untrained floor of ``fold``: the stage-one backbone's thresholded prior at 1 and 5 shots,
    over the same seeded test episodes as ``segproto.test``."""
    import statistics as st

    import torch

    from segproto.config import load_config
    from segproto.engine.builder import build_split, eval_loader
    from segproto.engine.fewshot import evaluate_fewshot, feature_cache
    from segproto.engine.trainer import json_clean
    from segproto.methods import build_method
    from segproto.models.prior_baseline import PriorBaseline

    wd = OUT / f"prior_fold{fold}"
    torch.set_num_threads(threads)
    for k in SHOTS:
        out = wd / f"test_{k}shot.json"
        if out.is_file():
            continue
        cfg = load_config(CFG, [*_stage_one(fold), f"fewshot.shots={k}"])
        dataset = build_split(cfg, cfg.data.test_split, train=False)
        floor = PriorBaseline(build_method(cfg, 2, None).model, PRIOR_THRESHOLD).eval()
        runs = {}
        with feature_cache(floor):
            for i, seed in enumerate(cfg.fewshot.eval_seeds):
                ds = dataset if i == 0 else dataset.with_seed(seed)
                runs[str(seed)] = evaluate_fewshot(floor, eval_loader(ds, cfg), ds.class_ids, ds.class_names,
                                                   torch.device("cpu"))
        summary = {m: st.fmean(r[m] for r in runs.values()) for m in ("mIoU", "FB-IoU")}
        wd.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(json_clean({**summary, "fold": fold, "shots": k, "threshold": PRIOR_THRESHOLD,
                                              "seeds": runs}), indent=2))
        note_machine(wd)  # the floor belongs to the stage one of this machine (docs/results.md, "Machines")
    _keep(wd, [*(f"test_{k}shot.json" for k in SHOTS), MACHINE])
    print(f"done {wd.name}: " + "  ".join(
        f"{k}-shot mIoU {json.loads((wd / f'test_{k}shot.json').read_text())['mIoU']:.2f}" for k in SHOTS), flush=True)
    return wd


def hdmnet_run(variant: str, fold: int, seed: int, threads: int) -> Path:
    """HDMNet training of one (variant, fold, seed), then its 1- and 5-shot tests."""
    wd = OUT / f"{variant}_fold{fold}_s{seed}"
    common = [*_stage_one(fold), *VARIANTS[variant]]
    _train(CFG, wd, [*common, f"seed={seed}"], threads)
    ckpt = _last_checkpoint(wd)
    for k in SHOTS:
        out = wd / f"test_{k}shot.json"
        if not out.is_file():
            run_logged([sys.executable, "-m", "segproto.test", CFG, str(ckpt), "--out", str(out), "--cfg-options",
                        *common, f"fewshot.shots={k}"], wd / f"test_{k}shot.log", threads)
    _keep(wd, ["metrics.json", *(f"test_{k}shot.json" for k in SHOTS), *RUN_INFO])
    r = {k: json.loads((wd / f"test_{k}shot.json").read_text()) for k in SHOTS}
    print(f"done {wd.name}: " + "  ".join(f"{k}-shot mIoU {r[k]['mIoU']:.2f} FB-IoU {r[k]['FB-IoU']:.2f}"
                                           for k in SHOTS), flush=True)
    return wd


def summarise() -> dict:
    """{variant: {fold: {"<k>shot": {metric: {mean, std, runs}}}}} over the training seeds found."""
    table: dict = {}
    for variant in VARIANTS:
        for wd in sorted(RESULTS.glob(f"{variant}_fold*_s*")):
            fold = wd.name[len(variant) + 5:].split("_s")[0]
            for k in SHOTS:
                path = wd / f"test_{k}shot.json"
                if not path.is_file():
                    continue
                res = json.loads(path.read_text())
                cell = table.setdefault(variant, {}).setdefault(fold, {}).setdefault(f"{k}shot", {})
                for m in ("mIoU", "FB-IoU"):
                    cell.setdefault(m, {"runs": []})["runs"].append(res[m])
    for folds in table.values():
        for shots in folds.values():
            for cell in shots.values():
                for v in cell.values():
                    v["mean"] = statistics.mean(v["runs"])
                    v["std"] = statistics.stdev(v["runs"]) if len(v["runs"]) > 1 else None
    return table


def paired() -> dict:
    """{"<fold>_s<seed>": {"<k>shot": distill - no_distill mIoU}} for each (fold, seed) run both ways."""
    out: dict = {}
    for wd in sorted(RESULTS.glob("distill_fold*_s*")):
        other = RESULTS / ("no_" + wd.name)
        for k in SHOTS:
            a, b = wd / f"test_{k}shot.json", other / f"test_{k}shot.json"
            if a.is_file() and b.is_file():
                diff = json.loads(a.read_text())["mIoU"] - json.loads(b.read_text())["mIoU"]
                out.setdefault(wd.name[len("distill_fold"):], {})[f"{k}shot"] = diff
    return out


def print_paired(diffs: dict) -> None:
    print("distillation minus CE only, mIoU, per (fold, training seed):")
    for k in SHOTS:
        vals = [d[f"{k}shot"] for d in diffs.values() if f"{k}shot" in d]
        if vals:
            print(f"  {k}-shot: " + " ".join(f"{d:+.2f}" for d in vals) + f"  mean {statistics.mean(vals):+.2f}, "
                  f"{sum(v > 0 for v in vals)} of {len(vals)} positive")


def print_table(table: dict) -> None:
    def fmt(v: dict) -> str:
        return f"{v['mean']:.2f}" + (f" ± {v['std']:.2f}" if v["std"] is not None else "")

    print("| variant | fold | seeds | 1-shot mIoU | 1-shot FB-IoU | 5-shot mIoU | 5-shot FB-IoU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for variant, folds in table.items():
        for fold, shots in sorted(folds.items()):
            cells = [fmt(shots[f"{k}shot"][m]) if f"{k}shot" in shots else "" for k in SHOTS for m in ("mIoU", "FB-IoU")]
            n = len(shots.get("1shot", {}).get("mIoU", {}).get("runs", []))
            print(f"| {variant} | {fold} | {n} | " + " | ".join(cells) + " |")


def write_study() -> Path:
    """Every finished run of the regime as ``benchmarks/results/studies/<regime>_hdmnet.json``
    (variants ``distill``, ``no_distill`` and ``prior_only``; metrics per shot count)."""
    runs = []
    for variant in (*VARIANTS, "prior_only"):
        pattern = "prior_fold*" if variant == "prior_only" else f"{variant}_fold*_s*"
        # RETRAINED/prior_fold<f>: the floor of a stage one trained again on another machine
        dirs = [*sorted(RESULTS.glob(pattern)), *(sorted((RESULTS / RETRAINED).glob(pattern))
                                                  if variant == "prior_only" else [])]
        for wd in dirs:
            tests = {k: wd / f"test_{k}shot.json" for k in SHOTS}
            if not all(t.is_file() for t in tests.values()):
                continue
            name = wd.name[len("prior_fold"):] if variant == "prior_only" else wd.name[len(variant) + 5:]
            fold, _, seed = name.partition("_s")
            metrics = {}
            for k, t in tests.items():
                res = json.loads(t.read_text())
                metrics.update({f"mIoU_{k}shot": res["mIoU"], f"FB-IoU_{k}shot": res["FB-IoU"]})
            info = {f[:-4]: (wd / f).read_text().strip() for f in RUN_INFO if f.endswith(".txt") and (wd / f).is_file()}
            runs.append({"variant": variant, "fold": int(fold), "seed": int(seed) if seed else None,
                         "config": CFG, "overrides": [] if variant == "prior_only" else VARIANTS[variant],
                         "threads": int(info["threads"]) if "threads" in info else None,
                         "wall_s": float(info["wall_s"]) if "wall_s" in info else None,
                         **(train_seconds_record(json.loads((wd / "metrics.json").read_text()))
                            if (wd / "metrics.json").is_file() else {}),
                         "commit": info.get("commit"), **machine_record(wd),
                         **({"stage_one": RETRAINED} if wd.parent.name == RETRAINED else {}), "metrics": metrics})
    STUDIES.mkdir(parents=True, exist_ok=True)
    path = STUDIES / f"{REGIME}_hdmnet.json"
    path.write_text(json.dumps({"study": "hdmnet", "regime": REGIME, "runs": runs}, indent=1) + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--regime", choices=sorted(REGIMES), default="quickstart")
    p.add_argument("--no-prior", action="store_true", help="skip the prior-mask floor")
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--jobs", type=int, default=1, help="runs at once")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of each run (default: cores // jobs); 1 beside another job")
    a = p.parse_args(argv)
    if a.jobs < 1 or (a.threads is not None and a.threads < 1):
        p.error(f"--jobs and --threads must be >= 1, got --jobs {a.jobs} --threads {a.threads}")
    set_regime(a.regime)
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.jobs)
    with ThreadPoolExecutor(a.jobs) as pool:
        list(pool.map(lambda f: base_run(f, threads), a.folds))
        if not a.no_prior:
            list(pool.map(lambda f: prior_run(f, threads), a.folds))
        jobs = [(v, f, s) for s in a.seeds for f in a.folds for v in a.variants]
        list(pool.map(lambda j: hdmnet_run(*j, threads), jobs))
    table, diffs = summarise(), paired()
    print_table(table)
    print_paired(diffs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hdmnet.json").write_text(json.dumps({**table, "paired_mIoU_difference": diffs}, indent=2))
    print(f"study file: {write_study()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
