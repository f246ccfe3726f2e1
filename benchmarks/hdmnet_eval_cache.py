"""HDMNet episodic evaluation with and without the frozen-backbone feature cache.

    python -m benchmarks.hdmnet_eval_cache [--config configs/hdmnet/quickstart.yaml] [--shots 5]
        [--episodes 300] [--seeds 0 1 2] [--fold 0]

The built-in dataset's validation episodes of ``--fold`` (``--episodes`` per episode seed, each of
``--seeds``), the model of ``--config`` with its seed's random weights (no checkpoint: the time
does not depend on the weights), evaluated the way ``python -m segproto.test`` does it: once with
``fewshot.feature_cache_mb=0`` (every query and masked support through the backbone), once with
the default cache over all seeds. Printed and written to
``benchmarks/results/hdmnet_eval_cache.json``: the wall time of each (one run each; a ratio
measured in one process), the cache's distinct entries, hits and bytes, and the metrics of both
runs (equal up to the rounding of batched kernels). No timed assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from benchmarks.common import machine, print_table, write_json
from segproto.config import load_config
from segproto.engine.builder import build_split, eval_loader
from segproto.engine.fewshot import evaluate_fewshot
from segproto.methods import METHODS


def run(cfg, cache_mb: float, seeds: list[int]) -> dict:
    torch.manual_seed(cfg.seed)
    cfg.fewshot.feature_cache_mb = cache_mb
    dataset = build_split(cfg, "val", train=False)
    method = METHODS[cfg.method.name](cfg, 2, None).eval()
    device = torch.device("cpu")
    t0 = time.perf_counter()
    block = method.model.cached_backbone() if cache_mb > 0 else contextlib.nullcontext()
    with block as cache:  # one cache over all seeds, as segproto.test
        metrics = {}
        for i, seed in enumerate(seeds):
            ds = dataset if i == 0 else dataset.with_seed(seed)
            m = evaluate_fewshot(method, eval_loader(ds, cfg), ds.class_ids, ds.class_names, device)
            metrics[seed] = {"mIoU": m["mIoU"], "FB-IoU": m["FB-IoU"]}
    row = {"cache_mb": cache_mb, "seconds": round(time.perf_counter() - t0, 2), "metrics": metrics}
    if cache is not None:
        row.update(entries=len(cache), hits=cache.hits, misses=cache.misses, cache_mib=round(cache.bytes / 2**20, 1))
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/hdmnet/quickstart.yaml")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/hdmnet_eval_cache.json")
    a = p.parse_args(argv)
    rows = []
    for cache_mb in (0.0, 1024.0):
        cfg = load_config(a.config)
        cfg.fewshot.shots, cfg.fewshot.val_episodes, cfg.fewshot.fold = a.shots, a.episodes, a.fold
        cfg.fewshot.eval_seeds, cfg.fewshot.backbone_checkpoint = list(a.seeds), None
        rows.append(run(cfg, cache_mb, a.seeds))
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    table = [{"cache": "off" if r["cache_mb"] == 0 else f"{r['cache_mb']:.0f} MiB", "seconds": r["seconds"],
              "entries": r.get("entries", ""), "hits": r.get("hits", ""), "cache_mib": r.get("cache_mib", ""),
              "mIoU per seed": " ".join(f"{m['mIoU']:.4f}" for m in r["metrics"].values())} for r in rows]
    print_table(table, list(table[0]))
    print(f"speed-up {speedup:.2f}x ({a.shots}-shot, {a.episodes} episodes x {len(a.seeds)} seeds, fold {a.fold})")
    write_json(a.out, {"args": vars(a), "machine": machine(), "rows": rows, "speedup": speedup})


if __name__ == "__main__":
    main()
