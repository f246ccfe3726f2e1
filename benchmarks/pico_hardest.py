"""PiCo hardest sampling against the memories: masked selection against the per-class one.

    python -m benchmarks.pico_hardest [--threads 1] [--repeats 7] [--quick]

Times the contrast loss of ``loss.contrast.sampling=hardest`` (forward and backward of the anchors)
at the pretrained regime's sizes (``configs/pretrained128/pico.yaml``: 1,024 anchors of dimension
128, 22 classes, both memories full: 22 x (2,000 + 500) = 55,000 rows, K = 512) two ways, interleaved
in this one run: (a) ``masked``: :func:`select_examples` on the ``[N, M]`` masks of
:func:`similarity_and_masks`, for positives and for negatives (the general path, and the one on a
GPU); (b) ``by_class``: :func:`sampled_contrast_loss`, which on the CPU selects with
:func:`hardest_by_class`. It checks in the same run that both give the same loss and gradient, and
writes JSON to ``benchmarks/results/pico_hardest.json``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks.common import machine, print_table, write_json
from segproto.config import load_config
from segproto.losses.pico import (contrast_loss_from_logits, sampled_contrast_loss, select_examples,
                                  similarity_and_masks)


def masked_loss(a, la, c, lc, k: int, t: float, tb: float):
    sim, pos, neg = similarity_and_masks(a, la, c, lc, t)
    pi, pv = select_examples(sim, pos, k, "hardest", False)
    ni, nv = select_examples(sim, neg, k, "hardest", True)
    return contrast_loss_from_logits(sim.gather(1, pi), pv, sim.gather(1, ni), nv, t, tb)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/pretrained128/pico.yaml")
    p.add_argument("--classes", type=int, default=22, help="classes (the built-in dataset's fine classes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the studies train with 1)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per variant (median)")
    p.add_argument("--quick", action="store_true", help="2 timed calls (a smoke run, not the reported one)")
    p.add_argument("--out", default="benchmarks/results/pico_hardest.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    repeats = 2 if a.quick else a.repeats
    c = load_config(a.config).loss.contrast
    n, d, k = c.max_samples, c.proj_dim, c.hard_k
    per_class = c.memory_size + c.region_memory_size
    g = torch.Generator().manual_seed(0)
    anchors = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_()
    labels = torch.randint(0, a.classes, (n,), generator=g)
    memory = F.normalize(torch.randn(a.classes * per_class, d, generator=g), dim=1)
    mem_labels = torch.cat([torch.arange(a.classes).repeat_interleave(m) for m in (c.memory_size,
                                                                                  c.region_memory_size)])
    variants = {
        "masked": lambda: masked_loss(anchors, labels, memory, mem_labels, k, c.temperature, c.base_temperature),
        "by_class": lambda: sampled_contrast_loss(anchors, labels, memory, mem_labels, temperature=c.temperature,
                                                  base_temperature=c.base_temperature, sampling="hardest",
                                                  hard_k=k),
    }
    results = {}
    for name, fn in variants.items():  # warm-up, and the values compared below
        loss = fn()
        results[name] = (loss.item(), torch.autograd.grad(loss, anchors)[0])
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            torch.autograd.grad(fn(), anchors)
            times[name].append(time.perf_counter() - t0)
    med = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
    rows = [{"variant": name, "ms": round(med[name] * 1e3, 1), "x_masked": round(med[name] / med["masked"], 3)}
            for name in variants]
    print_table(rows, ["variant", "ms", "x_masked"])
    loss_diff = abs(results["by_class"][0] - results["masked"][0])
    grad_diff = float((results["by_class"][1] - results["masked"][1]).abs().max())
    print(f"|loss difference| {loss_diff:.3g}, max |gradient difference| {grad_diff:.3g}")
    out = write_json(a.out, {
        "machine": machine(), "quick": a.quick, "repeats": repeats, "config": a.config,
        "anchors": n, "dim": d, "classes": a.classes, "memory_rows": a.classes * per_class, "hard_k": k,
        "rows": rows, "ratio_by_class_over_masked": med["by_class"] / med["masked"],
        "loss": {name: r[0] for name, r in results.items()}, "abs_loss_difference": loss_diff,
        "max_abs_gradient_difference": grad_diff})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
