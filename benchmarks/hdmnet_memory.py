"""HDMNet at 5-shot COCO-like sizes: peak memory and time of tiled vs dense matching, and of the prior.

    python -m benchmarks.hdmnet_memory [--device cpu|cuda] [--batch B] [--tiles 256,1024,4096] [--quick]

Sizes (COCO-20i, 473 px crops, ResNet-50 at output stride 8): query features 60x60 (Lq = 3600),
5 shots of 60x60 concatenated along the support axis (Ls = 18000); the finest matching stage has
2 heads of 32 channels (dim 64). B = 4 on CUDA, 1 on CPU by default (the dense form needs several
``B * 2 * 3600 * 18000 * 4`` bytes = 0.5 GiB-per-image copies). ``--quick``: 24x24 features, B = 1,
one repeat (a smoke run, not a result).

Variants, each in a fresh process (so one variant's freed memory cannot hide another's peak):
- ``match_dense``: ``dense_query_softmax_attention`` (masked cosine -> softmax over the query
  axis -> mask -> @ V through autograd: the full ``[B, heads, Lq, Ls]`` scores, several copies);
- ``match_tiled(t)``: ``query_softmax_attention`` with ``t`` query positions per tile (the
  ``fewshot.match_tile`` option, default 1024; a tile >= Lq is a single tile, which still keeps
  no score matrix for backward);
- each in mode ``train`` (forward + backward) and ``eval`` (forward under no_grad);
- ``prior_ours`` / ``prior_dense``: the 5-shot prior on layer4 features (C = 2048):
  ``masked_cosine_prior`` per shot vs ``normalize + bmm + amax`` per shot, averaged over shots.

Memory: on CUDA ``max_memory_allocated`` minus the allocation before the call (inputs excluded);
on CPU the peak RSS above the RSS before the call, sampled every 0.5 ms in a thread (first call,
so allocator caching cannot hide it; short-lived peaks between samples can be missed, so CPU
figures are lower bounds, and the quick sizes are near the allocator's noise). ``score_mb`` is
the analytic size of ONE score block (``B * heads * rows * Ls * 4`` bytes, rows = Lq dense or the
tile): the lower bound that the dense form multiplies. Time: median of the repeats after the
measured first call. No timed assertions; JSON goes to ``benchmarks/results/hdmnet_memory.json``.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from benchmarks.common import PeakRSS, machine, print_table, run_isolated, timeit, write_json
from segproto import ops
from segproto.models.hdmnet import dense_query_softmax_attention, query_softmax_attention

HEADS, HEAD_DIM, TEMPERATURE = 2, 32, 0.1


def _masks(b: int, shots: int, side: int, g: torch.Generator) -> torch.Tensor:
    """Binary support masks ``[B, shots * side^2]``: a random box per shot (~25-60% foreground)."""
    m = torch.zeros(b, shots, side, side)
    for i in range(b):
        for s in range(shots):
            h, w = torch.randint(side // 2, side + 1, (2,), generator=g).tolist()
            y = int(torch.randint(0, side - h + 1, (1,), generator=g))
            x = int(torch.randint(0, side - w + 1, (1,), generator=g))
            m[i, s, y:y + h, x:x + w] = 1
    return m.flatten(1)


def _measure(fn, device: str, reps: int) -> dict:
    """Peak extra memory of the first call, then the median time of ``reps`` more."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        with PeakRSS() as rss:
            fn()
        peak = rss.extra_mb
    return {"peak_extra_mb": peak, "time_s": timeit(fn, device, reps, warmup=0)}


def match_worker(variant: str, mode: str, device: str, b: int, side: int, shots: int, tile: int, reps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    lq, ls = side * side, shots * side * side
    q = torch.randn(b, HEADS, lq, HEAD_DIM, generator=g).to(device).requires_grad_(mode == "train")
    k = torch.randn(b, HEADS, ls, HEAD_DIM, generator=g).to(device).requires_grad_(mode == "train")
    v = torch.randn(b, HEADS, ls, HEAD_DIM, generator=g).to(device).requires_grad_(mode == "train")
    mask = _masks(b, shots, side, g).to(device)
    go = torch.randn(b, HEADS, lq, HEAD_DIM, generator=g).to(device)

    def call():
        if variant == "dense":
            return dense_query_softmax_attention(q, k, v, mask, TEMPERATURE)
        return query_softmax_attention(q, k, v, mask, TEMPERATURE, tile)

    def step():
        if mode == "eval":
            with torch.no_grad():
                return call()
        out, w = call()
        torch.autograd.backward([out, w], [go, torch.ones_like(w)])
        q.grad = k.grad = v.grad = None

    rows = lq if variant == "dense" else min(tile, lq)
    return {**_measure(step, device, reps), "score_mb": b * HEADS * rows * ls * 4 / 2**20}


def prior_worker(variant: str, device: str, b: int, side: int, shots: int, channels: int, reps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, channels, side * side, generator=g).to(device)
    sup = torch.randn(b, shots, channels, side * side, generator=g).to(device)
    masks = _masks(b, shots, side, g).view(b, shots, -1).to(device)

    def ours():
        return torch.stack([ops.masked_cosine_prior(q, sup[:, i], masks[:, i]) for i in range(shots)]).mean(0)

    def dense():
        qn = F.normalize(q, dim=1).transpose(1, 2)  # [B, Lq, C]
        return torch.stack([torch.bmm(qn, F.normalize(sup[:, i], dim=1) * masks[:, i, None]).amax(2)
                            for i in range(shots)]).mean(0)

    with torch.no_grad():
        res = _measure(ours if variant == "ours" else dense, device, reps)
    return {**res, "score_mb": b * (side * side) ** 2 * 4 / 2**20 if variant == "dense" else 0.0}


def _rows(a: argparse.Namespace, side: int, reps: int) -> list[dict]:
    common = [a.device, str(a.batch), str(side), str(a.shots)]
    rows = []
    for mode in ("train", "eval"):
        dense = run_isolated("benchmarks.hdmnet_memory", ["--worker", "match", "dense", mode, *common, "0", str(reps)])
        rows.append({"op": "matching", "mode": mode, "variant": "dense", "tile": "-", **dense})
        for tile in a.tiles:
            r = run_isolated("benchmarks.hdmnet_memory", ["--worker", "match", "tiled", mode, *common, str(tile), str(reps)])
            rows.append({"op": "matching", "mode": mode, "variant": "tiled", "tile": tile, **r,
                         "mem_ratio": r["peak_extra_mb"] / max(dense["peak_extra_mb"], 1e-9),
                         "time_ratio": r["time_s"] / dense["time_s"]})
    pd = run_isolated("benchmarks.hdmnet_memory", ["--worker", "prior", "dense", *common, str(a.channels), str(reps)])
    po = run_isolated("benchmarks.hdmnet_memory", ["--worker", "prior", "ours", *common, str(a.channels), str(reps)])
    rows.append({"op": "prior", "mode": "eval", "variant": "dense normalize+bmm+max", "tile": "-", **pd})
    rows.append({"op": "prior", "mode": "eval", "variant": "masked_cosine_prior", "tile": "-", **po,
                 "mem_ratio": po["peak_extra_mb"] / max(pd["peak_extra_mb"], 1e-9),
                 "time_ratio": po["time_s"] / pd["time_s"]})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=None, help="episodes per batch (default 4 on cuda, 1 on cpu)")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--channels", type=int, default=2048, help="layer4 channels for the prior (ResNet-50)")
    p.add_argument("--tiles", default="256,1024,4096", help="comma-separated match_tile values")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="24x24 features, B = 1, 1 repeat (a smoke run)")
    p.add_argument("--out", default="benchmarks/results/hdmnet_memory.json")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        kind, variant, *rest = a.worker
        if kind == "match":
            mode, dev, *nums = rest
            print(json.dumps(match_worker(variant, mode, dev, *map(int, nums))))
        else:
            dev, *nums = rest
            print(json.dumps(prior_worker(variant, dev, *map(int, nums))))
        return
    side = 24 if a.quick else 60
    a.batch = a.batch or (1 if a.quick or a.device == "cpu" else 4)
    a.tiles = [int(t) for t in a.tiles.split(",")] if not a.quick else [64, 4096]
    reps = 1 if a.quick else a.reps
    rows = _rows(a, side, reps)
    for r in rows:
        for key, val in list(r.items()):
            if isinstance(val, float):
                r[key] = round(val, 4 if abs(val) < 10 else 1)
    print(f"HDMNet matching/prior: B = {a.batch}, query {side}x{side}, {a.shots} shots of {side}x{side} "
          f"(Lq = {side * side}, Ls = {a.shots * side * side}), heads {HEADS} x {HEAD_DIM}, prior C = {a.channels}, "
          f"device {a.device}, repeats {reps}" + (" (quick smoke run)" if a.quick else ""))
    print_table(rows, ["op", "mode", "variant", "tile", "time_s", "peak_extra_mb", "score_mb", "mem_ratio",
                       "time_ratio"])
    out = write_json(a.out, {"machine": machine(), "build": ops.build_info(), "device": a.device, "quick": a.quick,
                             "sizes": {"batch": a.batch, "side": side, "shots": a.shots, "heads": HEADS,
                                       "head_dim": HEAD_DIM, "prior_channels": a.channels}, "repeats": reps,
                             "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
