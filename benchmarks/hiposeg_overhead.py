"""HiPoSeg training-step overhead on the quickstart model and batch.

    python -m benchmarks.hiposeg_overhead [--device cpu|cuda] [--steps 20] [--quick]

Times one full training step (forward, backward, SGD step) of plain CE and of HiPoSeg with every
term on (past the alignment start), on the two-level and the three-level taxonomy of the built-in
dataset, interleaved step by step in this one run, and reports each as a ratio to CE (issue 5's
target: at most 10% overhead). JSON goes to ``benchmarks/results/hiposeg_overhead.json``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from benchmarks.common import machine, print_table, write_json
from benchmarks.steps import quickstart_batch, time_steps_interleaved
from segproto import ops
from segproto.config import load_config
from segproto.data.pipeline.taxonomy import Taxonomy
from segproto.methods import build_method


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--config", default="configs/hiposeg/quickstart.yaml")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    p.add_argument("--quick", action="store_true", help="3 timed steps (a smoke run, not the reported one)")
    p.add_argument("--out", default="benchmarks/results/hiposeg_overhead.json")
    a = p.parse_args(argv)
    cfg = load_config(a.config)
    steps = 3 if a.quick else a.steps
    with tempfile.TemporaryDirectory() as root:
        img, gt = quickstart_batch(cfg, root, a.device)
        taxonomies = {lv: Taxonomy.from_yaml(f"{root}/{name}") for lv, name in
                      ((2, "taxonomy.yaml"), (3, "taxonomy_3level.yaml"))}
    k = taxonomies[2].num_classes(0)
    variants = {}
    for name, method, tax in (("ce", "ce", None), ("hiposeg_2level", "hiposeg", taxonomies[2]),
                              ("hiposeg_3level", "hiposeg", taxonomies[3])):
        cfg.method.name = method
        torch.manual_seed(0)
        variants[name] = build_method(cfg, k, tax)
    # make_step starts at iteration 1001 of train.iters = 1500: past every stage start
    med, last = time_steps_interleaved(variants, img, gt, steps, a.device)
    rows = [{"variant": name, "step_ms": round(med[name] * 1e3, 2), "x_ce": round(med[name] / med["ce"], 3),
             "overhead_vs_ce_%": round((med[name] / med["ce"] - 1) * 100, 1)} for name in med]
    print_table(rows, ["variant", "step_ms", "x_ce", "overhead_vs_ce_%"])
    h = cfg.loss.hiposeg
    out = write_json(a.out, {
        "machine": machine(), "build": ops.build_info(), "device": a.device, "quick": a.quick, "steps": steps,
        "config": a.config, "batch": list(img.shape), "proj_dim": h.proj_dim, "rows": rows,
        "last_step_outputs": last, "ratio_2level_over_ce": med["hiposeg_2level"] / med["ce"],
        "ratio_3level_over_ce": med["hiposeg_3level"] / med["ce"]})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
