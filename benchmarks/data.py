"""Data-pipeline benchmark: time to produce a training batch vs. one training step.

    python -m benchmarks.data [CONFIG] [--steps 20] [--out benchmarks/results/data.json]

Target (issue 3): data time under 10% of step time for the quickstart config.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import machine, write_json
from segproto.config import load_config
from segproto.engine import Trainer
from segproto.engine.builder import train_loader


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="configs/quickstart.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="benchmarks/results/data.json")
    a = p.parse_args(argv)
    cfg = load_config(a.config, ["train.progress_bar=false"])
    trainer = Trainer(cfg, "work_dirs/bench_data", force=True)  # a scratch dir, replaced on every run
    it = iter(train_loader(trainer.train_set, cfg, 0, 1, 0))
    next(it)  # warm-up (worker start)
    t0 = time.perf_counter()
    batches = [next(it) for _ in range(a.steps)]
    t_data = (time.perf_counter() - t0) / a.steps
    trainer.method.train()
    trainer._step(batches[0], 1)  # warm-up
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        trainer._step(b, i + 2)
    t_step = (time.perf_counter() - t0) / a.steps
    ratio = t_data / t_step
    print(f"config {a.config}: batch {cfg.data.batch_size} x {tuple(cfg.data.crop_size)}, workers {cfg.data.num_workers}")
    print(f"data time per batch {t_data * 1e3:.1f} ms, step time {t_step * 1e3:.1f} ms, ratio {ratio:.3f} (target < 0.10)")
    write_json(a.out, {"machine": machine(), "config": a.config, "data_ms": t_data * 1e3, "step_ms": t_step * 1e3,
                       "ratio": ratio, "threads": torch.get_num_threads()})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
