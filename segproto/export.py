"""Export a trained model as one self-contained file:
``python -m segproto.export [CONFIG] CKPT OUT [--format pth|torchscript|onnx|exported] [--force]
[--debug]``. An existing OUT is replaced only with ``--force``.

The file holds the deployable network only (no projection heads, memories or prototypes: inference
costs exactly the plain segmentor, whatever method trained it), its input normalisation, the input
convention, class names and palette (:mod:`segproto.deploy` describes each format). Load any of
them with ``segproto.load_model(OUT)``: neither the config nor the dataset is needed. Height and
width stay dynamic; after writing, the export is loaded back and compared with the checkpoint on a
random image of odd size (the printed ``parity`` line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from segproto.cli import add_debug_arg, load_or_exit, output_path, run_or_exit


def load_exported(path: str | Path, device="cpu"):
    """The bare network of an export (a :class:`~segproto.models.Segmentor` or HDMNet) in eval
    mode; it expects normalised input. ``segproto.load_model`` returns it with its preprocessing,
    class names and palette."""
    from segproto.deploy import load_model

    return load_model(path, device).deployable().net.eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m segproto.export", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="[CONFIG] CKPT OUT",
                   help="optional config (default: the one saved in the checkpoint), checkpoint, output file")
    p.add_argument("--format", choices=("pth", "torchscript", "onnx", "exported"),
                   help="default: from OUT's suffix (.onnx, .pt2 = exported, .ts = torchscript, else pth)")
    p.add_argument("--size", type=int, nargs=2, default=(67, 75), metavar=("H", "W"),
                   help="example input size used to trace the graph (height and width stay dynamic)")
    p.add_argument("--cfg-options", "--opts", dest="cfg_options", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE", help="overrides of CONFIG")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    add_debug_arg(p)
    a = p.parse_args(argv)
    if len(a.paths) not in (2, 3):
        p.error("expected CKPT OUT or CONFIG CKPT OUT")
    *cfg_path, ckpt, out = a.paths
    cfg = load_or_exit(cfg_path[0], a.cfg_options, a.debug) if cfg_path else None
    if a.cfg_options and cfg is None:
        p.error("--cfg-options needs CONFIG")
    return run_or_exit(lambda: _export(a, cfg, ckpt, out), a.debug)


def _export(a: argparse.Namespace, cfg, ckpt: str, out: str) -> int:
    from segproto.deploy import export_model, format_of, load_model

    fmt = format_of(out, a.format)
    if Path(out).expanduser().absolute() == Path(ckpt).expanduser().absolute():
        raise ValueError(f"OUT {out} is the checkpoint itself; give another file name")
    output_path(out, "OUT", a.force)
    model = load_model(ckpt, "cpu", config=cfg)
    path = export_model(model, out, fmt, example_size=a.size)
    diff = parity(model, load_model(path, "cpu"), a.size)
    n = sum(t.numel() for t in model.deployable().net.parameters())
    print(f"exported {path} ({fmt}, {model.kind}, {model.num_classes} classes): {n} parameters (deployable model only)")
    print(f"parity: max |logit difference| {diff:.3g} against the checkpoint at {a.size[0] + 2}x{a.size[1] + 4}")
    return 0


@torch.no_grad()
def parity(reference, exported, size) -> float:
    """Max absolute logit difference of two models on one seeded random image of ``size + (2, 4)``."""
    from segproto.deploy.export import _example_inputs

    inputs = [t[:1] for t in _example_inputs(reference.meta, (size[0] + 2, size[1] + 4))]
    return float((reference(*inputs) - exported(*inputs)).abs().max())


if __name__ == "__main__":
    sys.exit(main())
