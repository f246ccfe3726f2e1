"""PiCo training-step overhead on the quickstart model (quickstart batch, or the paper's).

    python -m benchmarks.pico_overhead [--device cpu|cuda] [--steps 10] [--memory-size M] [--quick] [--profile]
                                       [--size quickstart|paper]

Times one full training step (forward, backward, SGD step) of (a) plain CE, (b) PiCo with memory
using the vectorised sampler and the compiled ops, (c) PiCo with a per-image, per-class Python
loop for anchor sampling and for the enqueue, in the style of the public code. All three are
timed in this one run, interleaved step by step, and reported as ratios to (a); JSON goes to
``benchmarks/results/pico_overhead.json``. The contrast term is active (warm-up 0) in (b) and (c).

``--profile`` (after the timing, which it does not change) adds where the time goes: the PiCo part
of a step alone (projection head, targets, sampler, loss, memory push and the backward of
``loss_contrast``, on fixed segmentor outputs and memories) per stage for (b) and (c), interleaved,
with its top operators (``torch.profiler``, CPU, shapes), and the part's dispatched ops and the
points where a GPU run would wait for the device (:class:`DispatchCounter`; counted on any device).

``--size paper`` keeps the quickstart model (FCN + ResNet-18, output stride 8) but feeds it the
paper's batch (8 x 512 x 1024, 19 classes, 64 x 128 embeddings) with the paper's contrast sizes
(``PAPER``) and both memories full, as in a long run (JSON ``pico_overhead_paper.json``).
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
from torch.utils._python_dispatch import TorchDispatchMode

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
                mean = F.normalize(keys[b, idx], dim=1).mean(0, keepdim=True)  # keys: before normalisation
                ring_write(self.region_memory, c, F.normalize(mean, dim=1))
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


# Ops that make the host wait for the device on a GPU: their output's shape or value is read on the
# host (bincount reads its input's min and max). repeat_interleave only without output_size;
# index / index_put_ only with a boolean index.
SYNC_OPS = {"nonzero", "_local_scalar_dense", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
            "argwhere", "is_nonzero", "equal", "bincount"}
# No kernel launch: views, reshapes and allocations.
NO_KERNEL = {"view", "_unsafe_view", "reshape", "expand", "transpose", "t", "permute", "unsqueeze", "squeeze",
             "select", "slice", "detach", "alias", "as_strided", "split", "split_with_sizes", "unbind", "narrow",
             "_reshape_alias", "lift_fresh", "empty", "empty_strided", "new_empty", "new_empty_strided"}
# Host syncs inside segproto's C++ ops on CUDA: one device read each (label-error flag with the
# chunk count, or with the ptr check; csrc/common/class_plan.h).
CUSTOM_SYNCS = {"class_sums": 1, "memory_bank_push_": 1}


class DispatchCounter(TorchDispatchMode):
    """Counts the ops of a region that reach a kernel (one dispatch each; views and allocations left
    out) and the points where a GPU run would wait for the device (``SYNC_OPS``, boolean-mask
    indexing, ``repeat_interleave`` without ``output_size``, ``Tensor.tolist``, and the known
    syncs inside segproto's C++ ops). Device-independent, so it runs on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: dict[str, int] = {}
        self.syncs: dict[str, int] = {}
        self._tolist = None

    def _sync(self, name: str, n: int = 1) -> None:
        self.syncs[name] = self.syncs.get(name, 0) + n

    def __enter__(self):
        self._tolist = torch.Tensor.tolist
        counter, real = self, torch.Tensor.tolist

        def tolist(t):
            counter._sync("tolist")
            return real(t)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ns, name = func._schema.name.split("::")
        if name not in NO_KERNEL:
            self.ops[f"{ns}::{name}"] = self.ops.get(f"{ns}::{name}", 0) + 1
        if name in SYNC_OPS:
            self._sync(name)
        elif name in ("index", "index_put", "index_put_") and any(
                isinstance(i, Tensor) and i.dtype == torch.bool for i in (args[1] or [])):
            self._sync(f"{name} (bool mask)")
        elif name == "repeat_interleave" and kwargs.get("output_size") is None and len(args) < 4:
            self._sync("repeat_interleave")
        elif ns == "segproto" and name in CUSTOM_SYNCS:
            self._sync(f"segproto::{name} (inside)", CUSTOM_SYNCS[name])
        return func(*args, **kwargs)


@contextlib.contextmanager
def device_path_on_cpu(method: PiCoMethod):
    """Runs ``method``'s PiCo part as it runs on a GPU, on the CPU: fixed-shape anchors, per-pixel
    keys and the ATen composite of ``select_per_class`` (the CPU kernel and CPU key draw replaced)."""
    keys, select, fixed = ops.uniform_pixel_keys, ops.select_per_class, method.fixed_shape

    def device_keys(labels, ignore_index=255, generator=None):
        return torch.rand(labels.shape, generator=generator, device=labels.device)

    def device_select(labels, keys, v, k, ignore_index=255, check=True):
        if check:
            select(labels, keys, 0, k, ignore_index)  # the label check (one sync on a GPU)
        return ops._select_per_class_sorted(labels, keys, v, k, ignore_index)

    ops.uniform_pixel_keys, ops.select_per_class, method.fixed_shape = device_keys, device_select, True
    try:
        yield
    finally:
        ops.uniform_pixel_keys, ops.select_per_class, method.fixed_shape = keys, select, fixed


def count_pico_part(methods: dict, img: Tensor, gt: Tensor) -> dict:
    """Dispatched ops and would-be GPU syncs of one PiCo part (as in :func:`profile_pico_part`) per
    method; ``pico_ops`` also as on a GPU (:func:`device_path_on_cpu`)."""
    result = {}
    runs = [(name, m, contextlib.nullcontext()) for name, m in methods.items()]
    if "pico_ops" in methods:
        runs.insert(1, ("pico_ops (GPU path)", methods["pico_ops"], device_path_on_cpu(methods["pico_ops"])))
    for name, m, ctx in runs:
        with torch.no_grad():
            out = {k: v for k, v in m.segmentor(img).items() if k in ("logits", "feats")}
        state = {n: b.clone() for n, b in m.named_buffers() if "memory" in n}
        out["feats"] = out["feats"].detach().requires_grad_(True)
        counter = DispatchCounter()
        with ctx, counter:
            m.extra_losses(out, gt, 10_000)["loss_contrast"].backward()
        with torch.no_grad():
            for n, b in m.named_buffers():
                if n in state:
                    b.copy_(state[n])
        result[name] = {"ops": sum(counter.ops.values()), "syncs": sum(counter.syncs.values()),
                        "sync_points": dict(sorted(counter.syncs.items()))}
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


# The paper's memory-version settings (configs/pico/_cityscapes.yaml); the batch is 8 x 512 x 1024.
PAPER = {"memory_size": 5000, "region_memory_size": 5000, "max_samples": 1024, "max_views": 100, "proj_dim": 256,
         "pixels_per_class": 10}


def paper_batch(device: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """8 random 512 x 1024 images with a label map of 64 x 64 blocks of 19 classes (about 15 classes
    per image, each with ~ 400 pixels at the embedding stride: every class is an anchor pair)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(8, 3, 512, 1024, generator=g)
    blocks = torch.randint(0, 19, (8, 1, 8, 16), generator=g).float()
    gt = F.interpolate(blocks, size=(512, 1024), mode="nearest")[:, 0].long()
    return img.to(device), gt.to(device)


@torch.no_grad()
def fill_memories(method: PiCoMethod, seed: int = 0) -> None:
    """Every slot of both memories written with a random unit row (as after a long run)."""
    g = torch.Generator().manual_seed(seed)
    for mem in (method.pixel_memory, method.region_memory):
        rows = F.normalize(torch.randn(mem.bank.shape, generator=g), dim=2)
        mem.bank.copy_(rows)
        mem.count.fill_(mem.size)
        mem.ptr.zero_()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--config", default="configs/pico/quickstart.yaml")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--memory-size", type=int, default=None, help="override loss.contrast.memory_size")
    p.add_argument("--quick", action="store_true", help="3 timed steps (a smoke run, not the reported one)")
    p.add_argument("--profile", action="store_true", help="also profile where the PiCo time goes (see above)")
    p.add_argument("--size", choices=("quickstart", "paper"), default="quickstart",
                   help="paper: the quickstart model on the paper's batch (8 x 512 x 1024, 19 classes) with its "
                        "contrast sizes and full memories (see PAPER)")
    p.add_argument("--out", default=None, help="JSON (default benchmarks/results/pico_overhead[_paper].json)")
    a = p.parse_args(argv)
    a.out = a.out or f"benchmarks/results/pico_overhead{'_paper' if a.size == 'paper' else ''}.json"
    opts = ["loss.contrast.warmup_iters=0", "loss.contrast.memory=true"]
    if a.size == "paper":
        opts += [f"loss.contrast.{key}={value}" for key, value in PAPER.items()]
    if a.memory_size:
        opts.append(f"loss.contrast.memory_size={a.memory_size}")
    cfg = load_config(a.config, opts)
    steps = 3 if a.quick else a.steps
    if a.size == "paper":
        img, gt = paper_batch(a.device)
        k = 19
    else:
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
    if a.size == "paper":  # a long run's steady state: every memory slot written
        for name in ("pico_ops", "pico_loop"):
            fill_memories(variants[name])
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
                   "one_step_self_cpu_ms": profile_step_totals({n: variants[n] for n in ("ce", "pico_ops")}, img, gt),
                   "dispatch": count_pico_part(pico, img, gt)}
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
        print("PiCo part: dispatched ops and points where a GPU run waits for the device:")
        print_table([{"variant": n, **{k: v[k] for k in ("ops", "syncs")}, "where": v["sync_points"]}
                     for n, v in profile["dispatch"].items()], ["variant", "ops", "syncs", "where"])
    c = cfg.loss.contrast
    out = write_json(a.out, {
        "machine": machine(), "build": ops.build_info(), "device": a.device, "quick": a.quick, "steps": steps,
        "config": a.config, "size": a.size, "batch": list(img.shape), "contrast": {"memory_size": c.memory_size,
        "region_memory_size": c.region_memory_size, "max_samples": c.max_samples, "max_views": c.max_views,
        "pixels_per_class": c.pixels_per_class, "proj_dim": c.proj_dim},
        "rows": rows, "last_step_outputs": last, "ratio_ops_over_ce": med["pico_ops"] / med["ce"],
        "ratio_loop_over_ce": med["pico_loop"] / med["ce"], "ratio_loop_over_ops": med["pico_loop"] / med["pico_ops"],
        "overhead_ops_over_overhead_loop": ratio if over["pico_loop"] else None, "profile": profile})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
