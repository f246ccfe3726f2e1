"""Benchmark of the compiled ops against the pure-PyTorch reference and public-code-style loops.

    python -m benchmarks.ops [--device cpu|cuda] [--out benchmarks/results/ops-cpu.json] [--quick]

Prints one table of ratios measured in this run (targets from docs/ops.md) and writes JSON.
Peak memory of masked_cosine_prior is measured in fresh subprocesses (peak RSS on CPU,
max_memory_allocated on CUDA), one per variant.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from benchmarks.common import PeakRSS, machine, print_table, run_isolated, timeit, write_json
from segproto import _reference as ref
from segproto import ops


def eager_class_sums(feats, labels, k, normalize):
    """A fair float32 eager composite (what a user would write without the op)."""
    x = F.normalize(feats, dim=1) if normalize else feats
    valid = labels != 255
    sums = feats.new_zeros(k, feats.shape[1]).index_add_(0, labels[valid], x[valid])
    return sums, torch.bincount(labels[valid], minlength=k)


def bench_class_sums(device, n, d, k, reps):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(n, d, generator=g).to(device)
    labels = torch.randint(0, k, (n,), generator=g).to(device)
    buf = torch.empty_like(feats)
    floor = timeit(lambda: buf.copy_(feats), device, reps)
    rows = []
    for name, fn_op, fn_ref, fn_eager in [
        ("class_sums", lambda: ops.class_sums(feats, labels, k),
         lambda: ref.class_sums(feats, labels, k), lambda: eager_class_sums(feats, labels, k, False)),
        ("prototype_momentum_update_", lambda: ops.prototype_momentum_update_(torch.zeros(k, d, device=device), feats, labels, 0.9),
         lambda: ref.prototype_momentum_update_(torch.zeros(k, d, device=device), feats, labels, 0.9),
         lambda: eager_class_sums(feats, labels, k, True)),
    ]:
        t_op, t_ref, t_eager = (timeit(f, device, reps) for f in (fn_op, fn_ref, fn_eager))
        rows.append({"op": name, "size": f"N={n} D={d} K={k}", "op_ms": t_op * 1e3, "baseline": "reference (float64)",
                     "baseline_ms": t_ref * 1e3, "speedup": t_ref / t_op, "eager_f32_ms": t_eager * 1e3,
                     "speedup_vs_eager_f32": t_eager / t_op, "copy_floor_ms": floor * 1e3, "x_floor": t_op / floor,
                     "target": ">=2x vs reference, <=1.5x floor"})
    return rows


def loop_push(bank, ptr, emb, labels, v, gen):
    """Per-image, per-class Python loop in the style of the public implementation (with its
    pointer bug fixed so the work is comparable): sample V pixels of the class, normalise, enqueue."""
    k, m, _ = bank.shape
    for b in range(emb.shape[0]):
        for c in torch.unique(labels[b]).tolist():
            if c == 255:
                continue
            idx = (labels[b] == c).nonzero().squeeze(1)
            idx = idx[torch.randperm(idx.numel(), generator=gen, device=idx.device)[:v]]
            x = F.normalize(emb[b][:, idx].t(), dim=1)
            p = int(ptr[c])
            slots = (torch.arange(x.shape[0], device=x.device) + p) % m
            bank[c, slots] = x
            ptr[c] = (p + x.shape[0]) % m


def bench_memory_bank(device, b, h, w, d, k, v, m, reps):
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(b, d, h, w, generator=g).to(device)
    labels = torch.randint(0, k, (b, h * w), generator=g).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    bank, ptr, count = torch.zeros(k, m, d, device=device), torch.zeros(k, dtype=torch.long, device=device), torch.zeros(k, dtype=torch.long, device=device)

    image = torch.arange(b, device=device).view(b, 1, 1)
    classes = torch.arange(k, device=device).view(1, k, 1)

    def ours():  # what PiCo's memory update does: a fixed-shape [B, K, V] draw, -1 rows skipped
        table = ops.sample_per_class_dense(labels, v, k, generator=gen)
        feats = emb.flatten(2)[image, :, table.clamp_min(0)].reshape(-1, d)  # [B * K * V, D]
        cls = torch.where(table >= 0, classes, -1).reshape(-1)
        ops.memory_bank_push_(bank, ptr, count, feats, cls, ignore_index=-1)

    flat = emb.flatten(2)
    t_ours = timeit(ours, device, reps)
    t_loop = timeit(lambda: loop_push(bank, ptr, flat, labels, v, gen), device, reps)
    return [{"op": "memory_bank_push_ (+ sampling)", "size": f"B={b} HW={h}x{w} D={d} K={k} V={v} M={m}",
             "op_ms": t_ours * 1e3, "baseline": "per-image/class Python loop", "baseline_ms": t_loop * 1e3,
             "speedup": t_loop / t_ours, "target": ">=20x vs loop"}]


def bench_correlation(device, b, c, lq, ls, reps):
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(b, c, lq, generator=g).to(device), torch.randn(b, c, ls, generator=g).to(device)
    mask = (torch.rand(b, ls, generator=g) > 0.5).float().to(device)
    base = lambda: torch.bmm(F.normalize(q, dim=1).transpose(1, 2), F.normalize(s, dim=1) * mask[:, None])
    t_op = timeit(lambda: ops.masked_cosine_correlation(q, s, mask), device, reps)
    t_base = timeit(base, device, reps)
    return [{"op": "masked_cosine_correlation", "size": f"B={b} C={c} Lq={lq} Ls={ls}", "op_ms": t_op * 1e3,
             "baseline": "normalize + bmm (f32)", "baseline_ms": t_base * 1e3, "speedup": t_base / t_op,
             "target": ">=0.9"}]


def prior_worker(variant: str, device: str, b: int, c: int, lq: int, ls: int, shots: int, reps: int) -> dict:
    """Runs one prior variant in this (fresh) process; returns time and peak extra memory."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, c, lq, generator=g).to(device)
    sup = [torch.randn(b, c, ls, generator=g).to(device) for _ in range(shots)]
    masks = [(torch.rand(b, ls, generator=g) > 0.5).float().to(device) for _ in range(shots)]

    def ours():
        return torch.stack([ops.masked_cosine_prior(q, s, m) for s, m in zip(sup, masks)]).mean(0)

    def dense():
        qn = F.normalize(q, dim=1).transpose(1, 2)
        return torch.stack([torch.bmm(qn, F.normalize(s, dim=1) * m[:, None]).amax(2) for s, m in zip(sup, masks)]).mean(0)

    fn = ours if variant == "ours" else dense
    with torch.no_grad():
        if device == "cuda":  # first run: the peak
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        else:
            with PeakRSS() as rss:
                fn()
            peak = rss.extra_mb
        t = timeit(fn, device, reps, warmup=0)
    return {"variant": variant, "time_s": t, "peak_extra_mb": peak}


def bench_prior(device, b, c, lq, ls, shots, reps):
    args = [device, str(b), str(c), str(lq), str(ls), str(shots), str(reps)]
    ours = run_isolated("benchmarks.ops", ["--prior-worker", "ours", *args])
    dense = run_isolated("benchmarks.ops", ["--prior-worker", "dense", *args])
    return [{"op": "masked_cosine_prior", "size": f"B={b} C={c} Lq={lq} {shots}x Ls={ls}",
             "op_ms": ours["time_s"] * 1e3, "baseline": "dense normalize+bmm+max", "baseline_ms": dense["time_s"] * 1e3,
             "speedup": dense["time_s"] / ours["time_s"], "op_peak_mb": ours["peak_extra_mb"],
             "baseline_peak_mb": dense["peak_extra_mb"], "mem_ratio": ours["peak_extra_mb"] / dense["peak_extra_mb"],
             "target": "mem <=10% of dense, speedup >=1"}]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/ops-<device>.json)")
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the reported one)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--prior-worker", nargs=8, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.prior_worker:
        v, dev, *nums = a.prior_worker
        print(json.dumps(prior_worker(v, dev, *map(int, nums))))
        return
    if not ops.build_info()["extension"]:
        sys.exit(f"benchmarks.ops: the compiled extension is not loaded ({ops.build_info()['error']})")
    s = 4 if a.quick else 1
    rows = bench_class_sums(a.device, 8 * 128 * 256 // s, 256, 19, a.reps)
    # embeddings at output stride 8 of PiCo's 512x1024 Cityscapes crops: 64x128 per image
    rows += bench_memory_bank(a.device, 8, 64 // s, 128 // s, 256, 19, 10, 5000, a.reps)
    rows += bench_correlation(a.device, 4, 256, 2500 // s, 2500 // s, a.reps)
    rows += bench_prior(a.device, 4, 256, 6400 // s, 6400 // s, 5, max(1, a.reps // 3))
    for r in rows:
        for key, val in list(r.items()):
            if isinstance(val, float):
                r[key] = round(val, 3 if abs(val) < 100 else 1)
    print_table(rows, ["op", "size", "op_ms", "baseline", "baseline_ms", "speedup", "x_floor", "mem_ratio", "target"])
    out = write_json(a.out or f"benchmarks/results/ops-{a.device}.json",
                     {"machine": machine(), "build": ops.build_info(), "quick": a.quick, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
