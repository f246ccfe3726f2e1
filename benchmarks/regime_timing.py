"""Step time of each pretrained-regime config, to size its schedule (docs/results.md).

    OMP_NUM_THREADS=2 python -m benchmarks.regime_timing [--iters 40] [--configs ce pico ...]

Trains each ``configs/pretrained128/<name>.yaml`` for ``--iters`` iterations (no evaluation, the
method's warm-ups off so its loss runs from the first step) in a temporary work dir and reads the
mean step time of the last logged window (``time`` in ``scalars.jsonl``: the trainer's per-step wall
time over the last ``log_interval`` steps, data loading included). Prints seconds per iteration
and the minutes that the config's ``train.iters`` would take at that speed, and writes
``benchmarks/results/regime_timing.json``. Run it alone on the machine: another job on the same
cores slows every step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("ce", "hiposeg", "pico", "mean_teacher_1-8", "prcl_1-8")
OVERRIDES = ["train.eval_interval=100000", "sched.warmup_iters=10", "train.progress_bar=false",
             "loss.contrast.warmup_iters=0"]


def step_time(work_dir: Path) -> float:
    """Mean step seconds of the last training log record of a run."""
    records = [json.loads(ln) for ln in (work_dir / "scalars.jsonl").read_text().splitlines() if ln]
    return [r for r in records if r.get("mode") == "train"][-1]["time"]


def measure(name: str, iters: int, extra: list[str], work_dir: Path) -> dict:
    config = f"configs/pretrained128/{name}.yaml"
    log_interval = max(1, iters // 2)
    overrides = [f"train.iters={iters}", f"train.log_interval={log_interval}", *OVERRIDES, *extra]
    subprocess.run([sys.executable, "-m", "segproto.train", config, "--work-dir", str(work_dir), "--cfg-options",
                    *overrides], cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from segproto.config import load_config

    planned = load_config(config).train.iters
    sec = step_time(work_dir)
    return {"config": config, "overrides": overrides, "seconds_per_iter": sec, "train_iters": planned,
            "projected_minutes": sec * planned / 60}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS))
    p.add_argument("--cfg-options", nargs="*", default=[], help="extra overrides for every config")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "regime_timing.json"))
    a = p.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.configs:
            rows[name] = measure(name, a.iters, a.cfg_options, Path(tmp) / name)
            r = rows[name]
            print(f"{name:18s} {r['seconds_per_iter']:.3f} s/iter  x {r['train_iters']} iters = "
                  f"{r['projected_minutes']:.1f} min", flush=True)
    Path(a.out).write_text(json.dumps({"threads": os.environ.get("OMP_NUM_THREADS"), "iters": a.iters,
                                       "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
