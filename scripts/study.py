"""Method studies: variants x training seeds, kept as committed result files.

    python scripts/study.py run pretrained128 pico [--seeds 0 1 2] [--variants ...] [--threads 1]
    python scripts/study.py run quickstart hiposeg --jobs 2   # two 1-thread trainings at once
    python scripts/study.py queue pretrained128                # every study of a regime, seed-major
    python scripts/study.py test pretrained128 pico --variants pico_memory [--seeds 0 1 2]
    python scripts/study.py list

Regimes: ``quickstart`` (64 px, from scratch, the configs of ``configs/quickstart.yaml`` and the
methods' ``quickstart.yaml``) and ``pretrained128`` (128 px, ImageNet EfficientNet-Lite0,
``configs/pretrained128/``).

Each run is ``python -m segproto.train CONFIG --work-dir work_dirs/studies/<regime>/<variant>_s<seed>
--cfg-options ... seed=<seed>``. A run with a ``metrics.json`` is not trained again; a run that was
interrupted continues from its last checkpoint (``--resume``), so rerunning a command resumes the
study. After every finished run its record (variant, seed, config, overrides, metrics, wall time,
the commit of the code that trained it) is written to
``benchmarks/results/studies/<regime>_<study>.json``, the file that ``scripts/study_tables.py``
turns into the tables of docs/results.md. Variants shared by several studies of a regime (``ce``)
train once and are recorded in each study.

``test`` scores each finished run's final checkpoint on the held-out test split (``python -m
segproto.test <run>/config.yaml <checkpoint> --split test``) into ``<run>/test_metrics.json``;
the record then carries those as ``test_metrics``. A sweep selects on the validation split, so
its confirmation runs are compared on the test split too.

Run one training at a time with ``--threads 1`` beside other work, ``--threads 2`` alone, or
``--jobs 2`` (two trainings with one thread each); never two trainings with two threads each on
two cores (docs/results.md: several times slower).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from segproto.utils.env import machine_info

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "work_dirs" / "studies"
RESULTS = REPO / "benchmarks" / "results" / "studies"

P128 = "configs/pretrained128"
PICO, HIPO, HARD = "configs/pico/quickstart.yaml", "configs/hiposeg/quickstart.yaml", ["loss.contrast.hard_k=256"]
# regime -> study -> variant -> (config, overrides); "ce" is each study's baseline.
STUDIES: dict[str, dict[str, dict[str, tuple[str, list[str]]]]] = {
    "quickstart": {
        "pico": {
            "ce": ("configs/quickstart.yaml", []),
            "pico_batch": (PICO, ["loss.contrast.memory=false"]),
            "pico_memory": (PICO, []),
            "pico_hardest": (PICO, ["loss.contrast.sampling=hardest", *HARD]),
            "pico_semi_hard": (PICO, ["loss.contrast.sampling=semi_hard", *HARD]),
            "pico_synthesis": (PICO, ["loss.contrast.sampling=hardest", *HARD, "loss.contrast.synth_neg_neg=64",
                                      "loss.contrast.synth_neg_anchor=64"]),
        },
        "hiposeg": {
            "ce": ("configs/quickstart.yaml", []),
            "hiposeg_coarse": (HIPO, ["loss.hiposeg.weight_fine=0", "loss.hiposeg.weight_align=0"]),
            "hiposeg_fine": (HIPO, ["loss.hiposeg.weight_coarse=0", "loss.hiposeg.weight_align=0"]),
            "hiposeg_no_align": (HIPO, ["loss.hiposeg.weight_align=0"]),
            "hiposeg_full": (HIPO, []),
            "hiposeg_3level": (HIPO, ["data.taxonomy=taxonomy_3level.yaml"]),
            "hiposeg_light": (HIPO, ["loss.hiposeg.weight_coarse=0.1", "loss.hiposeg.weight_fine=0.1",
                                     "loss.hiposeg.weight_align=0.1"]),
            # the best configuration of the 16-trial sweep of docs/sweeps.md (search/spaces/hiposeg.yaml)
            "hiposeg_swept": ("configs/hiposeg/quickstart_swept.yaml", []),
        },
        "prcl": {
            "ce": ("configs/prcl/supervised_1-8.yaml", []),  # labelled-only: the baseline of this study
            "mean_teacher_1-8": ("configs/prcl/mean_teacher_1-8.yaml", []),
            "prcl_1-8": ("configs/prcl/quickstart.yaml", []),
        },
    },
    "pretrained128": {
        "pico": {
            "ce": (f"{P128}/ce.yaml", []),
            "pico_batch": (f"{P128}/pico.yaml", ["loss.contrast.memory=false"]),
            "pico_memory": (f"{P128}/pico.yaml", []),
            "pico_hardest": (f"{P128}/pico.yaml", ["loss.contrast.sampling=hardest"]),
            "pico_synthesis": (f"{P128}/pico.yaml", ["loss.contrast.sampling=hardest",
                                                     "loss.contrast.synth_neg_neg=64",
                                                     "loss.contrast.synth_neg_anchor=64"]),
            # the best trial of the 12-trial sweep (search/spaces/pretrained128_pico.yaml)
            "pico_swept": (f"{P128}/pico_swept.yaml", []),
        },
        "hiposeg": {
            "ce": (f"{P128}/ce.yaml", []),
            "hiposeg_coarse": (f"{P128}/hiposeg.yaml", ["loss.hiposeg.weight_fine=0",
                                                        "loss.hiposeg.weight_align=0"]),
            "hiposeg_full": (f"{P128}/hiposeg.yaml", []),
            "hiposeg_3level": (f"{P128}/hiposeg.yaml", ["data.taxonomy=taxonomy_3level.yaml"]),
        },
        "prcl": {
            "ce": (f"{P128}/supervised_1-8.yaml", []),  # labelled-only: the baseline of this study
            "mean_teacher_1-8": (f"{P128}/mean_teacher_1-8.yaml", []),
            "prcl_1-8": (f"{P128}/prcl_1-8.yaml", []),
        },
    },
}


def git_commit(where: Path = REPO) -> str:
    """The commit checked out in the repository (or worktree) holding ``where`` (``unknown`` outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _work_dir(regime: str, study: str, variant: str, seed: int) -> Path:
    # "ce" of the prcl study is the labelled-only run: a different training from the other "ce"s
    name = f"{study}_{variant}" if (variant == "ce" and study == "prcl") else variant
    return WORK / regime / f"{name}_s{seed}"


def _seeds_on_disk(regime: str, study: str, variant: str) -> list[int]:
    """The seeds of the variant's work dirs (``<name>_s<seed>``, the name matched exactly)."""
    name = re.escape(_work_dir(regime, study, variant, 0).name.rpartition("_s")[0])
    found = (re.fullmatch(rf"{name}_s(\d+)", p.name) for p in (WORK / regime).glob("*_s*"))
    return sorted(int(m.group(1)) for m in found if m)


def _metrics(wd: Path, name: str = "metrics.json") -> dict:
    """The record's metrics: dataset-level aAcc / mIoU / mAcc, each taxonomy level, per-class IoU."""
    return _select_metrics(json.loads((wd / name).read_text()))


def _select_metrics(m: dict) -> dict:
    """:func:`_metrics` of an already-read metrics file ``m``."""
    out = {k: m[k] for k in ("aAcc", "mIoU", "mAcc")}
    for level, values in m.get("levels", {}).items():
        for k in ("aAcc", "mIoU", "mAcc"):
            if k in values:
                out[f"{k}_{level}"] = values[k]
    if "IoU" in m:
        out["IoU"] = m["IoU"]
    if "classes" in m:
        out["classes"] = m["classes"]
    return out


def run_logged(cmd: list[str], log: Path, threads: int, append: bool = False) -> None:
    """Runs ``cmd`` from the repository root with ``threads`` torch threads, output to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a" if append else "w") as f:
        subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)


MACHINE = "machine.json"


def note_machine(wd: Path) -> None:
    """Adds this machine to the run's ``machine.json`` (a list: one entry per machine it trained on,
    in order), unless it is the last one there."""
    path = wd / MACHINE
    seen = json.loads(path.read_text()) if path.is_file() else []
    here = machine_info()  # segproto.utils.env: CPU, torch's CPU kernel set, library versions
    if not seen or seen[-1] != here:
        path.write_text(json.dumps([*seen, here], indent=1) + "\n")


def machine_record(wd: Path) -> dict:
    """``{"machine": [...]}`` from the run's ``machine.json``, or ``{}`` for a run without one."""
    path = wd / MACHINE
    return {"machine": json.loads(path.read_text())} if path.is_file() else {}


def train_run(config: str, wd: Path, overrides: list[str], threads: int, log: Path) -> bool:
    """``segproto.train`` of ``config`` into ``wd`` unless its metrics.json exists; returns whether it trained.

    An interrupted run continues from its last checkpoint (appending to ``log``) and keeps the commit
    and thread count it started with; one stopped before its first checkpoint starts again. A start
    writes ``commit.txt`` and ``threads.txt`` beside the run; ``wall_s.txt`` is the last process's
    wall time (the record's ``train_seconds``, from metrics.json, adds up every process);
    ``machine.json`` lists the machines it trained on (a resume on another one adds it).
    """
    if (wd / "metrics.json").is_file():
        return False
    resume = (wd / "last_checkpoint").is_file()
    cmd = [sys.executable, "-m", "segproto.train", config, "--work-dir", str(wd)]
    if resume:
        cmd.append("--resume")
    elif (wd / "scalars.jsonl").is_file():  # stopped before its first checkpoint: start it again
        cmd.append("--force")
    wd.mkdir(parents=True, exist_ok=True)
    if not resume:
        (wd / "commit.txt").write_text(git_commit() + "\n")
        (wd / "threads.txt").write_text(f"{threads}\n")
        (wd / MACHINE).unlink(missing_ok=True)
    note_machine(wd)
    start = time.time()
    run_logged([*cmd, "--cfg-options", *overrides, "train.progress_bar=false"], log, threads, append=resume)
    (wd / "wall_s.txt").write_text(f"{time.time() - start:.1f}\n")
    return True


def train(regime: str, study: str, variant: str, seed: int, threads: int) -> Path:
    """Trains one run of a study (:func:`train_run`, output in its ``stdout.log``); returns its dir."""
    config, overrides = STUDIES[regime][study][variant]
    wd = _work_dir(regime, study, variant, seed)
    train_run(config, wd, [*overrides, f"seed={seed}"], threads, wd / "stdout.log")
    return wd


def train_seconds_record(m: dict) -> dict:
    """``train_seconds`` of a run's metrics.json ``m`` (training time over every process of a resumed
    run, ``train_seconds_partial`` where a checkpoint lacked it), for runs whose trainer writes
    ``process_seconds`` beside it; ``{}`` for older runs, whose ``train_seconds`` is the last process's."""
    if "process_seconds" not in m:
        return {}
    return {"train_seconds": round(m["train_seconds"], 1),
            **({"train_seconds_partial": True} if m.get("train_seconds_partial") else {})}


def record(regime: str, study: str, variant: str, seed: int) -> dict | None:
    """The result record of one finished run, or None."""
    wd = _work_dir(regime, study, variant, seed)
    if not (wd / "metrics.json").is_file():
        return None
    config, overrides = STUDIES[regime][study][variant]
    metrics = json.loads((wd / "metrics.json").read_text())
    wall = wd / "wall_s.txt"
    commit = wd / "commit.txt"
    return {"variant": variant, "seed": seed, "config": config, "overrides": overrides,
            "threads": int((wd / "threads.txt").read_text()) if (wd / "threads.txt").is_file() else None,
            "wall_s": float(wall.read_text()) if wall.is_file() else None,
            **train_seconds_record(metrics),
            "commit": commit.read_text().strip() if commit.is_file() else None,
            **machine_record(wd),
            "metrics": _select_metrics(metrics),
            **({"test_metrics": _metrics(wd, TEST_METRICS)} if (wd / TEST_METRICS).is_file() else {})}


def write_results(regime: str, study: str) -> Path:
    """Merges every finished run of the study into its result file (runs already in it are kept)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{regime}_{study}.json"
    old = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    runs = {(r["variant"], r["seed"]): r for r in old["runs"]}
    for variant in STUDIES[regime][study]:
        for seed in _seeds_on_disk(regime, study, variant):
            rec = record(regime, study, variant, seed)
            if rec is not None:
                runs[(variant, seed)] = rec
    ordered = sorted(runs.values(), key=lambda r: (list(STUDIES[regime][study]).index(r["variant"])
                                                   if r["variant"] in STUDIES[regime][study] else 99, r["seed"]))
    data = {"study": study, "regime": regime, "runs": ordered}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path


_RESULTS_LOCK = threading.Lock()


def run_jobs(jobs: list[tuple[str, str, str, int]], threads: int, parallel: int = 1) -> None:
    """Trains the jobs in order, ``parallel`` at a time (each with ``threads`` threads)."""
    if parallel > 1:
        with ThreadPoolExecutor(parallel) as pool:
            for _ in pool.map(lambda job: run_jobs([job], threads), jobs):
                pass
        return
    for regime, study, variant, seed in jobs:
        wd = _work_dir(regime, study, variant, seed)
        fresh = not (wd / "metrics.json").is_file()
        if fresh:
            print(f"train {regime}/{study}/{variant} seed {seed}", flush=True)
        train(regime, study, variant, seed, threads)
        with _RESULTS_LOCK:  # parallel jobs merge into the same result files
            for other, variants in STUDIES[regime].items():
                if variant in variants and _work_dir(regime, other, variant, seed) == wd:
                    write_results(regime, other)
        if fresh:
            m = json.loads((wd / "metrics.json").read_text())
            print(f"done {wd.name}: mIoU {m['mIoU']:.2f}", flush=True)


TEST_METRICS = "test_metrics.json"


def test_runs(regime: str, study: str, variants: list[str], seeds: list[int], threads: int) -> None:
    """Scores every finished run of the variants and seeds on the test split (skipping scored ones)
    and rewrites the study's result file."""
    for variant in variants:
        for seed in seeds:
            wd = _work_dir(regime, study, variant, seed)
            if not (wd / "metrics.json").is_file():
                print(f"skip {wd.name}: not finished", flush=True)
                continue
            if (wd / TEST_METRICS).is_file():
                continue
            ckpt = wd / (wd / "last_checkpoint").read_text().strip()
            cmd = [sys.executable, "-m", "segproto.test", str(wd / "config.yaml"), str(ckpt), "--split", "test",
                   "--out", str(wd / TEST_METRICS)]
            run_logged(cmd, wd / "test.log", threads)
            m = json.loads((wd / TEST_METRICS).read_text())
            print(f"test {wd.name}: mIoU {m['mIoU']:.2f}", flush=True)
    write_results(regime, study)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one study")
    r.add_argument("regime", choices=sorted(STUDIES))
    r.add_argument("study")
    r.add_argument("--variants", nargs="+")
    q = sub.add_parser("queue", help="every study of a regime, one seed of every variant at a time")
    q.add_argument("regime", choices=sorted(STUDIES))
    q.add_argument("--studies", nargs="+")
    t = sub.add_parser("test", help="score finished runs on the test split")
    t.add_argument("regime", choices=sorted(STUDIES))
    t.add_argument("study")
    t.add_argument("--variants", nargs="+")
    for a in (r, q, t):
        a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        a.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each training")
    for a in (r, q):
        a.add_argument("--jobs", type=int, default=1, help="trainings at once (give each --threads 1)")
    sub.add_parser("list", help="print the studies and their variants")
    a = p.parse_args(argv)
    if a.cmd == "list":
        for regime, studies in STUDIES.items():
            for study, variants in studies.items():
                print(f"{regime} {study}: {', '.join(variants)}")
        return 0
    studies = STUDIES[a.regime]
    if a.cmd in ("run", "test"):
        if a.study not in studies:
            p.error(f"unknown study {a.study!r} for regime {a.regime}; choose from {sorted(studies)}")
        variants = a.variants or list(studies[a.study])
        unknown = sorted(set(variants) - set(studies[a.study]))
        if unknown:
            p.error(f"unknown variants {unknown}; choose from {list(studies[a.study])}")
        if a.cmd == "test":
            test_runs(a.regime, a.study, variants, a.seeds, a.threads)
            return 0
        jobs = [(a.regime, a.study, v, s) for s in a.seeds for v in variants]
    else:
        chosen = a.studies or list(studies)
        jobs, seen = [], set()
        for s in a.seeds:
            for study in chosen:
                for v in studies[study]:
                    key = _work_dir(a.regime, study, v, s)
                    if key not in seen:
                        seen.add(key)
                        jobs.append((a.regime, study, v, s))
    run_jobs(jobs, a.threads, a.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
