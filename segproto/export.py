"""Export the deployable segmentor: ``python -m segproto.export CONFIG CKPT OUT``.

The output holds only the segmentor's weights (no projection heads, memories or prototypes),
with the model config and class names; load it with :func:`load_exported`. Inference cost is
exactly that of the plain segmentor, whatever method trained it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from segproto.cli import add_config_args, load_or_exit, trained_or_exit


def load_exported(path: str | Path, device="cpu"):
    """Rebuilds the plain segmentor from an exported file (eval mode)."""
    from segproto.models import build_segmentor

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_segmentor(state["model_cfg"], len(state["classes"]))
    model.load_state_dict(state["segmentor"])
    return model.to(device).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m segproto.export", description=__doc__.split("\n")[0])
    add_config_args(p)
    p.add_argument("checkpoint")
    p.add_argument("out")
    a = p.parse_args(argv)
    cfg = load_or_exit(a.config, a.cfg_options)

    from segproto.config import config_to_dict
    from segproto.engine.checkpoint import atomic_torch_save

    _, _, names, palette, method = trained_or_exit(cfg, a.checkpoint, cfg.data.val_split)
    seg = method.deployable()
    model_cfg = config_to_dict(cfg)["model"]
    model_cfg["pretrained"] = None  # weights are in the file
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"segmentor": seg.state_dict(), "model_cfg": model_cfg, "classes": list(names),
                       "palette": [list(c) for c in palette] if palette else None}, a.out)
    n = sum(t.numel() for t in seg.parameters())
    print(f"exported {a.out}: {n} parameters (segmentor only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
