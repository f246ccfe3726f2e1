"""Rebuilding a trained method from a config + checkpoint (test / infer / export)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch

from segproto.methods import build_method

from .builder import build_split, label_space
from segproto.utils.checkpoint import CheckpointError, read_state


def without_weight_files(cfg: Any) -> Any:
    """``cfg`` with ``model.pretrained`` and ``fewshot.backbone_checkpoint`` unset: a checkpoint or
    an export holds every weight (an HDMNet's frozen backbone included), so neither the ImageNet
    file nor the stage-one checkpoint is needed to test, infer or export."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=None),
                               fewshot=dataclasses.replace(cfg.fewshot, backbone_checkpoint=None))


def load_trained(cfg: Any, ckpt: str | Path, num_classes: int, taxonomy=None, device="cpu"):
    """Builds ``cfg``'s method and loads a training checkpoint or an exported model into it
    (the file is read once).

    Returns:
        The method in eval mode on ``device``.
    """
    state = read_state(ckpt)
    method = build_method(without_weight_files(cfg), num_classes, taxonomy)
    if isinstance(state, dict) and "segmentor" in state:  # an exported model
        target = method.segmentor if hasattr(method, "segmentor") else method.deployable()
        target.load_state_dict(state["segmentor"])
    elif isinstance(state, dict) and "model" in state:  # a training checkpoint
        method.load_state_dict(state["model"])
    else:
        raise CheckpointError(f"{ckpt} is neither a segproto checkpoint nor an exported model")
    return method.to(device).eval()


class Trained(NamedTuple):
    dataset: Any  # the split's dataset (label space, palette, taxonomy)
    num_classes: int
    class_names: list
    palette: Optional[list]
    method: torch.nn.Module


def load_for_inference(cfg: Any, ckpt: str | Path, split: str, device="cpu") -> Trained:
    """The split's dataset, its label space at ``data.level`` and the trained method on ``device``."""
    dataset = build_split(cfg, split, train=False)
    k, names, palette = label_space(dataset, cfg.data.level)
    return Trained(dataset, k, names, palette, load_trained(cfg, ckpt, k, dataset.taxonomy, device))
