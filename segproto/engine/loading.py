"""Rebuilding a trained method from a config + checkpoint (test / infer / export)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segproto.methods import build_method

from .checkpoint import load_checkpoint


def load_trained(cfg: Any, ckpt: str | Path, num_classes: int, taxonomy=None, device="cpu"):
    """Builds ``cfg``'s method and loads a training checkpoint or an exported model into it.

    Returns:
        The method in eval mode on ``device``.
    """
    path = Path(ckpt)
    method = build_method(cfg, num_classes, taxonomy)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "segmentor" in state:  # an exported model
        method.segmentor.load_state_dict(state["segmentor"])
    else:
        method.load_state_dict(load_checkpoint(path)["model"])
    return method.to(device).eval()
