"""Training-step timing shared by the method-overhead benchmarks (pico_overhead, hiposeg_overhead)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import Tensor

from benchmarks.common import sync
from segproto.engine.builder import build_split


def quickstart_batch(cfg, root: str, device: str) -> tuple[Tensor, Tensor]:
    """One quickstart training batch from a freshly generated synthetic set of batch_size images."""
    from segproto.data import generate_synthetic

    n = cfg.data.batch_size
    size = cfg.data.synthetic.image_size
    generate_synthetic(root, num_train=n, num_val=1, num_test=1, image_size=size, seed=0)
    cfg.data.root, cfg.data.synthetic.num_train, cfg.data.synthetic.num_val = root, n, 1
    cfg.data.synthetic.num_test = 1
    ds = build_split(cfg, cfg.data.train_split, train=True)
    samples = [ds[i] for i in range(n)]
    img = torch.stack([s["img"] for s in samples]).to(device)
    gt = torch.stack([s["gt"] for s in samples]).to(device)
    return img, gt


def make_step(method, img: Tensor, gt: Tensor):
    opt = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    state = {"it": 1000}

    def step() -> dict:
        state["it"] += 1
        out = method(img, gt, state["it"])
        loss = sum(v for k, v in out.items() if k.startswith("loss"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {k: round(float(v), 4) for k, v in out.items()}

    return step


def time_steps_interleaved(methods: dict, img: Tensor, gt: Tensor, steps: int,
                           device: str) -> tuple[dict[str, float], dict[str, dict]]:
    """Median step time (s) per method, timed step by step in turn so that load from other jobs
    hits every method alike; also each method's outputs at its last step."""
    fns = {}
    for name, method in methods.items():
        fns[name] = make_step(method.to(device).train(), img, gt)
        fns[name]()  # warm-up (and a first fill of any memory or prototype buffer)
    times: dict[str, list[float]] = {}
    last: dict[str, dict] = {}
    for _ in range(steps):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            last[name] = fn()
            sync(device)
            times.setdefault(name, []).append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}, last
