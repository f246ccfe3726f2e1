"""PiCo training-step overhead on the quickstart model and batch.

    python -m benchmarks.pico_overhead [--device cpu|cuda] [--steps 10] [--memory-size M] [--quick]

Times one full training step (forward, backward, SGD step) of (a) plain CE, (b) PiCo with memory
using the vectorised sampler and the compiled ops, (c) PiCo with a per-image, per-class Python
loop for anchor sampling and for the enqueue, in the style of the public code. All three are
timed in this one run, interleaved step by step, and reported as ratios to (a); JSON goes to
``benchmarks/results/pico_overhead.json``. The contrast term is active (warm-up 0) in (b) and (c).
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.common import machine, print_table, write_json
from benchmarks.steps import quickstart_batch, time_steps_interleaved
from segproto import ops
from segproto.config import load_config
from segproto.losses import AnchorSample
from segproto.methods import build_method
from segproto.methods.pico import ClassMemory, PiCoMethod


def loop_sample_anchors(emb: Tensor, labels: Tensor, preds: Tensor, k: int, max_samples: int, max_views: int,
                        ignore: int, gen: Optional[torch.Generator]) -> AnchorSample:
    """Public-code style: unique classes per image, then one randperm per (image, class, kind)."""
    pairs = []
    for b in range(emb.shape[0]):
        for c in torch.unique(labels[b]).tolist():
            if c != ignore and int((labels[b] == c).sum()) > max_views:
                pairs.append((b, c))
    n_view = min(max_samples // len(pairs), max_views) if pairs else 0
    feats, labs, image, pixel, hard = [], [], [], [], []
    for b, c in pairs:
        hard_idx = ((labels[b] == c) & (preds[b] != c)).nonzero().squeeze(1)
        easy_idx = ((labels[b] == c) & (preds[b] == c)).nonzero().squeeze(1)
        nh, ne = hard_idx.numel(), easy_idx.numel()
        if nh >= n_view / 2 and ne >= n_view / 2:
            kh = n_view // 2
        elif nh >= n_view / 2:
            kh = n_view - ne
        else:
            kh = nh
        ke = n_view - kh
        hp = hard_idx[torch.randperm(nh, generator=gen, device=emb.device)[:kh]]
        ep = easy_idx[torch.randperm(ne, generator=gen, device=emb.device)[:ke]]
        idx = torch.cat([hp, ep])
        feats.append(emb[b, idx])
        labs.append(torch.full((idx.numel(),), c, dtype=torch.long, device=emb.device))
        image.append(torch.full_like(labs[-1], b))
        pixel.append(idx)
        hard.append(torch.arange(idx.numel(), device=emb.device) < kh)
    if not feats:
        z = torch.zeros(0, dtype=torch.long, device=emb.device)
        return AnchorSample(emb.new_zeros(0, emb.shape[2]), z, z, z, z.bool(), emb.new_zeros(()))
    hard_t = torch.cat(hard)
    return AnchorSample(torch.cat(feats), torch.cat(labs), torch.cat(image), torch.cat(pixel), hard_t,
                        hard_t.float().mean())


def ring_write(mem: ClassMemory, c: int, rows: Tensor) -> None:
    """One class's ring-buffer write (pointer advanced by the rows written, count kept)."""
    m, n, p = mem.size, rows.shape[0], int(mem.ptr[c])
    mem.bank[c, (p + torch.arange(n, device=rows.device)) % m] = rows[-m:] if n > m else rows
    mem.ptr[c] = (p + n) % m
    mem.count[c] = min(int(mem.count[c]) + n, m)


class LoopPiCo(PiCoMethod):
    """PiCo with the public code's per-image, per-class Python loops (sampler and enqueue)."""

    def sample_anchors(self, emb, labels, preds, gen):
        c = self.contrast_cfg
        return loop_sample_anchors(emb, labels, preds, self.num_classes, c.max_samples, c.max_views,
                                   self.ignore_index, gen)

    @torch.no_grad()
    def update_memory(self, keys, labels, gen):
        v = self.contrast_cfg.pixels_per_class
        for b in range(keys.shape[0]):
            for c in torch.unique(labels[b]).tolist():
                if c == self.ignore_index:
                    continue
                idx = (labels[b] == c).nonzero().squeeze(1)
                ring_write(self.region_memory, c, F.normalize(keys[b, idx].mean(0, keepdim=True), dim=1))
                pick = idx[torch.randperm(idx.numel(), generator=gen, device=idx.device)[:v]]
                ring_write(self.pixel_memory, c, F.normalize(keys[b, pick], dim=1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--config", default="configs/pico/quickstart.yaml")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--memory-size", type=int, default=None, help="override loss.contrast.memory_size")
    p.add_argument("--quick", action="store_true", help="3 timed steps (a smoke run, not the reported one)")
    p.add_argument("--out", default="benchmarks/results/pico_overhead.json")
    a = p.parse_args(argv)
    opts = ["loss.contrast.warmup_iters=0", "loss.contrast.memory=true"]
    if a.memory_size:
        opts.append(f"loss.contrast.memory_size={a.memory_size}")
    cfg = load_config(a.config, opts)
    steps = 3 if a.quick else a.steps
    with tempfile.TemporaryDirectory() as root:
        img, gt = quickstart_batch(cfg, root, a.device)
    k = 22  # the synthetic dataset's fine classes
    cfg.method.name = "ce"
    torch.manual_seed(0)
    variants = {"ce": build_method(cfg, k)}
    torch.manual_seed(0)
    variants["pico_ops"] = PiCoMethod.from_config(cfg, k)
    torch.manual_seed(0)
    variants["pico_loop"] = LoopPiCo.from_config(cfg, k)
    med, last = time_steps_interleaved(variants, img, gt, steps, a.device)
    rows = [{"variant": name, "step_ms": round(med[name] * 1e3, 2), "x_ce": round(med[name] / med["ce"], 3),
             "overhead_vs_ce_%": round((med[name] / med["ce"] - 1) * 100, 1)} for name in med]
    print_table(rows, ["variant", "step_ms", "x_ce", "overhead_vs_ce_%"])
    print(f"loop / ops step time: {med['pico_loop'] / med['pico_ops']:.2f}x")
    c = cfg.loss.contrast
    out = write_json(a.out, {
        "machine": machine(), "build": ops.build_info(), "device": a.device, "quick": a.quick, "steps": steps,
        "config": a.config, "batch": list(img.shape), "contrast": {"memory_size": c.memory_size,
        "region_memory_size": c.region_memory_size, "max_samples": c.max_samples, "max_views": c.max_views,
        "pixels_per_class": c.pixels_per_class, "proj_dim": c.proj_dim},
        "rows": rows, "last_step_outputs": last, "ratio_ops_over_ce": med["pico_ops"] / med["ce"],
        "ratio_loop_over_ce": med["pico_loop"] / med["ce"], "ratio_loop_over_ops": med["pico_loop"] / med["pico_ops"]})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
