"""Method ablations at the quickstart budget (docs/results.md): variants x seeds, then a table.

    python scripts/ablation.py pico|hiposeg|prcl [--seeds 0 1 2] [--variants a b ...] [--jobs 1]

Each run is ``python -m segproto.train CONFIG --work-dir work_dirs/ablation/<variant>_s<seed>
--cfg-options ... seed=<seed>``; runs with a ``metrics.json`` are skipped, so an interrupted
ablation resumes where it stopped. ``--jobs 2`` runs two trainings at once with one thread each
(on a 2-core machine this is faster than one at a time with two threads). The table (mean ± sample
std of the validation mIoU at every taxonomy level) is printed and written to
``work_dirs/ablation/<suite>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "work_dirs" / "ablation"
PICO = "configs/pico/quickstart.yaml"
HIPO = "configs/hiposeg/quickstart.yaml"
HARD = ["loss.contrast.hard_k=256"]

# suite -> variant -> (config, overrides); the first variant of each suite is its baseline.
SUITES: dict[str, dict[str, tuple[str, list[str]]]] = {
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
        "hiposeg_swept": ("work_dirs/sweep_hiposeg/best_config.yaml", ["train.eval_interval=500"]),
    },
    "prcl": {
        "ce": ("configs/quickstart.yaml", []),  # fully supervised: the ceiling
        "supervised_1-8": ("configs/prcl/supervised_1-8.yaml", []),
        "mean_teacher_1-8": ("configs/prcl/mean_teacher_1-8.yaml", []),
        "prcl_1-8": ("configs/prcl/quickstart.yaml", []),
    },
}


def run_one(variant: str, seed: int, config: str, overrides: list[str], threads: int) -> Path:
    """Trains one (variant, seed) unless its metrics.json exists; returns the work dir."""
    wd = OUT / f"{variant}_s{seed}"
    if (wd / "metrics.json").is_file():
        return wd
    cmd = [sys.executable, "-m", "segproto.train", config, "--work-dir", str(wd), "--cfg-options", *overrides,
           f"seed={seed}", "train.progress_bar=false"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    wd.mkdir(parents=True, exist_ok=True)
    with open(wd / "stdout.log", "w") as log:
        subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"done {wd.name}: mIoU {json.loads((wd / 'metrics.json').read_text())['mIoU']:.2f}", flush=True)
    return wd


def summarise(suite: str) -> dict:
    """Mean, sample std and per-seed values of mIoU at every level, per variant with results."""
    table = {}
    for variant in SUITES[suite]:
        runs = sorted(OUT.glob(f"{variant}_s*/metrics.json"), key=lambda p: int(p.parent.name.rsplit("_s", 1)[1]))
        if not runs:
            continue
        per_level: dict[str, list[float]] = {}
        seeds = []
        for path in runs:
            m = json.loads(path.read_text())
            seeds.append(int(path.parent.name.rsplit("_s", 1)[1]))
            for level, v in m.get("levels", {"fine": {"mIoU": m["mIoU"]}}).items():
                per_level.setdefault(level, []).append(v["mIoU"])
        table[variant] = {"seeds": seeds, "levels": {
            lv: {"mean": statistics.mean(x), "std": statistics.stdev(x) if len(x) > 1 else None, "runs": x}
            for lv, x in per_level.items()}}
    return table


def print_table(table: dict) -> None:
    levels = sorted({lv for row in table.values() for lv in row["levels"]},
                    key=lambda lv: ["fine", "middle", "coarse"].index(lv) if lv in ("fine", "middle", "coarse") else 9)
    print("| variant | seeds | " + " | ".join(f"{lv} mIoU" for lv in levels) + " |")
    print("|---|---:|" + "---:|" * len(levels))
    for variant, row in table.items():
        cells = []
        for lv in levels:
            s = row["levels"].get(lv)
            cells.append("" if s is None else f"{s['mean']:.2f}" + (f" ± {s['std']:.2f}" if s["std"] is not None else ""))
        print(f"| {variant} | {len(row['seeds'])} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("suite", choices=sorted(SUITES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=None, help="a subset of the suite's variants")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (threads per run = cores // jobs)")
    a = p.parse_args(argv)
    suite = SUITES[a.suite]
    variants = a.variants or list(suite)
    unknown = sorted(set(variants) - set(suite))
    if unknown:
        p.error(f"unknown variants {unknown} for suite {a.suite!r}; choose from {list(suite)}")
    threads = max(1, (os.cpu_count() or 1) // a.jobs)
    jobs = [(v, s, *suite[v], threads) for s in a.seeds for v in variants]
    with ThreadPoolExecutor(a.jobs) as pool:
        for _ in pool.map(lambda job: run_one(*job), jobs):
            pass
    table = summarise(a.suite)
    print_table(table)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{a.suite}.json").write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
