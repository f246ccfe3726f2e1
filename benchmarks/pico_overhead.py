"""PiCo training-step overhead on the quickstart model and batch.

    python -m benchmarks.pico_overhead [--device cpu|cuda] [--steps 10] [--memory-size M] [--quick] [--profile]

Times one full training step (forward, backward, SGD step) of (a) plain CE, (b) PiCo with memory
using the vectorised sampler and the compiled ops, (c) PiCo with a per-image, per-class Python
loop for anchor sampling and for the enqueue, in the style of the public code. All three are
timed in this one run, interleaved step by step, and reported as ratios to (a); JSON goes to
``benchmarks/results/pico_overhead.json``. The contrast term is active (warm-up 0) in (b) and (c).

``--profile`` (after the timing, which it does not change) adds where the time goes: the PiCo part
of a step alone (projection head, targets, sampler, loss, memory push and the backward of
``loss_contrast``, on fixed segmentor outputs and memories) per stage for (b) and (c), interleaved,
with its top operators (``torch.profiler``, CPU, shapes).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import tempfile
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks.common import machine, print_table, sync, write_json
from benchmarks.steps import make_step, quickstart_batch, time_steps_interleaved
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


STAGES = ("proj", "targets_at", "sample_anchors", "contrast_loss", "update_memory", "backward_rest")
# backward_rest: the part minus the timed stages = backward of loss_contrast (projection head, anchor
# gather) + the rest of extra_losses (generator seeding, reshapes, diagnostics)


@contextlib.contextmanager
def timed_stages(method: PiCoMethod, sink: dict, device: str):
    """Times the PiCo stages of ``method`` into ``sink[stage]`` (seconds, added up) and labels them
    for ``torch.profiler``; the wrappers are instance attributes, removed on exit."""
    def wrap(name, fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            with torch.profiler.record_function(f"pico::{name}"):
                sync(device)
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    sync(device)
                    sink[name] = sink.get(name, 0.0) + time.perf_counter() - t0
        return run

    targets = [(method.proj, "forward", "proj")] + [(method, n, n) for n in STAGES[1:-1]]
    for obj, attr, name in targets:
        setattr(obj, attr, wrap(name, getattr(obj, attr)))
    try:
        yield
    finally:
        for obj, attr, _ in targets:
            delattr(obj, attr)


def profile_pico_part(methods: dict, img: Tensor, gt: Tensor, steps: int, device: str, rows: int = 12) -> dict:
    """The PiCo part of a step alone: ``extra_losses`` + backward of ``loss_contrast`` on fixed,
    detached segmentor outputs, with the memories restored before every call (the same contrast
    set each time). Interleaved across ``methods``: median wall ms of the part and of each stage,
    then the top operators of the part (self CPU ms, median of 7 profiled parts, ``torch.profiler``
    with shapes)."""
    outs, states = {}, {}
    with torch.no_grad():
        for name, m in methods.items():
            outs[name] = {k: v for k, v in m.segmentor(img).items() if k in ("logits", "feats")}
            states[name] = {n: b.clone() for n, b in m.named_buffers() if "memory" in n}

    def restore(name: str) -> None:
        with torch.no_grad():
            for n, b in methods[name].named_buffers():
                if n in states[name]:
                    b.copy_(states[name][n])

    def part(name: str, sink: dict) -> None:
        m = methods[name]
        out = dict(outs[name], feats=outs[name]["feats"].detach().requires_grad_(True))
        sync(device)
        t0 = time.perf_counter()
        with timed_stages(m, sink, device):
            loss = m.extra_losses(out, gt, 10_000)["loss_contrast"]
            loss.backward()
        sync(device)
        sink["part"] = time.perf_counter() - t0
        sink["backward_rest"] = sink["part"] - sum(sink.get(k, 0.0) for k in STAGES[:-1])

    samples: dict[str, list[dict]] = {name: [] for name in methods}
    for _ in range(steps):
        for name in methods:
            sink: dict = {}
            restore(name)
            part(name, sink)
            samples[name].append(sink)
    result = {}
    for name in methods:
        med = {k: round(statistics.median(s.get(k, 0.0) for s in samples[name]) * 1e3, 3) for k in ("part", *STAGES)}
        ops: dict[tuple, list] = {}
        reps = 7
        for r in range(reps):
            restore(name)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
                part(name, {})
            for e in prof.key_averages(group_by_input_shape=True):
                if not e.key.startswith("pico::"):
                    ops.setdefault((e.key, str(e.input_shapes)[:70]), [[0.0] * reps, e.count])[0][r] = (
                        e.self_cpu_time_total / 1e3)
        top = sorted(((k, statistics.median(v[0]), v[1]) for k, v in ops.items()), key=lambda t: -t[1])[:rows]
        result[name] = {"part_ms": med.pop("part"), "stage_ms": med, "contrast_rows": sum(
            int(b.sum()) for n, b in states[name].items() if n.endswith("count")),
            "top_ops": [{"op": k[0], "self_cpu_ms": round(t, 3), "calls": c, "shapes": k[1]} for k, t, c in top]}
        restore(name)
    return result


def profile_step_totals(methods: dict, img: Tensor, gt: Tensor) -> dict:
    """Self CPU ms of one full training step of each method under ``torch.profiler`` (one sample:
    on a shared machine the convolutions' noise is larger than the PiCo part)."""
    result = {}
    for name, m in methods.items():
        step = make_step(m, img, gt)
        step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        result[name] = round(sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3, 2)
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--config", default="configs/pico/quickstart.yaml")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--memory-size", type=int, default=None, help="override loss.contrast.memory_size")
    p.add_argument("--quick", action="store_true", help="3 timed steps (a smoke run, not the reported one)")
    p.add_argument("--profile", action="store_true", help="also profile where the PiCo time goes (see above)")
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
    over = {n: med[n] - med["ce"] for n in ("pico_ops", "pico_loop")}
    ratio = over["pico_ops"] / over["pico_loop"] if over["pico_loop"] else float("nan")
    print(f"loop / ops step time: {med['pico_loop'] / med['pico_ops']:.2f}x; "
          f"overhead ops / overhead loop: {ratio:.2f}")
    profile = None
    if a.profile:
        pico = {n: variants[n] for n in ("pico_ops", "pico_loop")}
        profile = {"pico_part": profile_pico_part(pico, img, gt, max(steps, 5), a.device),
                   "one_step_self_cpu_ms": profile_step_totals({n: variants[n] for n in ("ce", "pico_ops")}, img, gt)}
        part = profile["pico_part"]
        print("PiCo part of a step alone (median ms; memories fixed at "
              f"{part['pico_ops']['contrast_rows']} contrast rows):")
        print_table([{"variant": n, "part_ms": v["part_ms"], **v["stage_ms"]} for n, v in part.items()],
                    ["variant", "part_ms", *STAGES])
        for name, v in part.items():
            print(f"{name}: top operators of the PiCo part (self CPU ms per part)")
            print_table(v["top_ops"], ["op", "self_cpu_ms", "calls", "shapes"])
        print(f"PiCo part, ops / loop: {part['pico_ops']['part_ms'] / part['pico_loop']['part_ms']:.2f}")
        print("one full step, self CPU ms:", profile["one_step_self_cpu_ms"])
    c = cfg.loss.contrast
    out = write_json(a.out, {
        "machine": machine(), "build": ops.build_info(), "device": a.device, "quick": a.quick, "steps": steps,
        "config": a.config, "batch": list(img.shape), "contrast": {"memory_size": c.memory_size,
        "region_memory_size": c.region_memory_size, "max_samples": c.max_samples, "max_views": c.max_views,
        "pixels_per_class": c.pixels_per_class, "proj_dim": c.proj_dim},
        "rows": rows, "last_step_outputs": last, "ratio_ops_over_ce": med["pico_ops"] / med["ce"],
        "ratio_loop_over_ce": med["pico_loop"] / med["ce"], "ratio_loop_over_ops": med["pico_loop"] / med["pico_ops"],
        "overhead_ops_over_overhead_loop": ratio if over["pico_loop"] else None, "profile": profile})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
