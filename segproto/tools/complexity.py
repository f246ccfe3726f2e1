"""Parameters, FLOPs and throughput of a deployable model:
``python -m segproto.tools.complexity MODEL|CONFIG [--size H W] [--batch N] [--device cpu] [--iters 20]
[--warmup 3] [--json out.json] [--cfg-options ...]``.

MODEL is a training checkpoint or an export (:func:`segproto.load_model`); a CONFIG (``.yaml``)
builds its deployable model with random weights (no checkpoint, no dataset). What is measured is
the deployed network with its normalisation, never training-only parts.

* **params**: the network's parameter count (buffers such as BatchNorm statistics excluded).
* **FLOPs**: ``torch.utils.flop_counter.FlopCounterMode`` over one forward of a ``--batch`` of
  ``--size`` images, divided by the batch; a multiply-add counts as 2 FLOPs (halve it to compare
  with mmcv/fvcore "FLOPs", which count multiply-adds). Ops without a FLOP formula (compiled custom
  ops, elementwise ops) count 0. TorchScript and ``torch.export`` files are counted like modules;
  ONNX sessions run outside PyTorch and print ``n/a``.
* **images/s**: ``--warmup`` untimed forwards, then ``--iters`` timed ones (CUDA synchronised),
  in eval mode under ``torch.no_grad``; a measurement of this machine at this moment, printed, never
  asserted. HDMNet models are run with one support image per query.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from segproto.cli import add_debug_arg, load_or_exit, output_path, run_or_exit

__all__ = ["count_flops", "measure", "main"]


def count_flops(fn: Callable[..., Any], *inputs: torch.Tensor) -> Optional[int]:
    """Total FLOPs of ``fn(*inputs)`` by ``torch.utils.flop_counter`` (None when it cannot run)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            fn(*inputs)
    except Exception:  # e.g. an onnxruntime session: not made of torch ops
        return None
    return int(counter.get_total_flops())


def _inputs(model, size: Sequence[int], batch: int, device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    h, w = size
    img = (torch.rand(batch, 3, h, w, generator=g) * 255).to(device)
    if model.kind != "hdmnet":
        return (img,)
    sup = (torch.rand(batch, 1, 3, h, w, generator=g) * 255).to(device)
    mask = torch.zeros(batch, 1, h, w, device=device)
    mask[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    return img, sup, mask


@torch.no_grad()
def measure(model, size: Sequence[int] = (512, 1024), batch: int = 1, iters: int = 20, warmup: int = 3) -> dict:
    """``{"params", "flops" (per image), "images_per_second", "seconds_per_batch", ...}`` of a
    :class:`segproto.deploy.SegModel` on its device."""
    device = model.device
    inputs = _inputs(model, size, batch, device)
    onnx = model.format == "onnx"  # runs in onnxruntime: no PyTorch parameters or ops to count
    params = None if onnx else sum(p.numel() for p in model.parameters())
    flops = None if onnx else count_flops(model, *inputs)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(*inputs)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        model(*inputs)
    sync()
    elapsed = time.perf_counter() - start
    return {"params": params, "flops": None if flops is None else flops / batch,
            "images_per_second": batch * iters / elapsed, "seconds_per_batch": elapsed / iters,
            "size": list(size), "batch": batch, "iters": iters, "device": str(device),
            "threads": torch.get_num_threads(), "kind": model.kind, "format": model.format,
            "classes": model.num_classes}


def _from_config(cfg, device):
    """A config's deployable model with random weights."""
    from segproto.deploy.loading import SegModel, _method_class, _wrap, config_label_space, model_meta

    cls = _method_class(cfg.method.name)
    classes = ["background", "foreground"] if getattr(cls, "episodic", False) else config_label_space(cfg)[0]
    if not classes:
        raise ValueError("data.classes: the config names no classes (expected data.classes, data.taxonomy or a "
                         "dataset with built-in classes)")
    meta = model_meta(cfg, classes)
    return SegModel(_wrap(cls.build_deployable(cfg, len(classes)), meta), meta, "config").to(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m segproto.tools.complexity", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="checkpoint, export, or a config (.yaml: random weights)")
    p.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"), help="input size (512 1024)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    p.add_argument("--iters", type=int, default=20, help="timed forwards")
    p.add_argument("--warmup", type=int, default=3, help="untimed forwards first")
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--cfg-options", "--opts", dest="cfg_options", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE", help="overrides of a config")
    add_debug_arg(p)
    a = p.parse_args(argv)
    if a.batch < 1 or a.iters < 1 or a.warmup < 0 or min(a.size) < 1:
        p.error("--batch, --iters and --size must be positive, --warmup >= 0")
    return run_or_exit(lambda: _run(a), a.debug)


def _run(a: argparse.Namespace) -> int:
    """Loads the model, measures it, prints (and writes ``--json``); bad inputs raise."""
    from segproto.deploy import load_model

    if a.json:
        output_path(a.json, "--json", a.force)  # checked before the timing, not after it
    if Path(a.model).suffix.lower() in (".yaml", ".yml"):
        model = _from_config(load_or_exit(a.model, a.cfg_options), torch.device(a.device))
    else:
        model = load_model(a.model, a.device)
    res = measure(model, a.size, a.batch, a.iters, a.warmup)
    flops = "n/a (not countable in this format)" if res["flops"] is None else f"{res['flops'] / 1e9:.3f} GFLOPs"
    print(f"{a.model} ({res['kind']}, {res['format']}, {res['classes']} classes)")
    print("params: n/a (ONNX session)" if res["params"] is None else f"params: {res['params'] / 1e6:.3f} M ({res['params']})")
    print(f"FLOPs per image at {a.size[0]}x{a.size[1]}: {flops} (torch.utils.flop_counter; multiply-add = 2)")
    print(f"images/s: {res['images_per_second']:.2f} (batch {a.batch}, {a.iters} timed forwards after {a.warmup}, "
          f"{res['device']}, {res['threads']} threads)")
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, **res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
