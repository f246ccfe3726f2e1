"""Rebuilding a trained method from a config + checkpoint (test / infer / export)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch

from segproto.config import config_to_dict
from segproto.methods import build_method
from segproto.utils.checkpoint import CheckpointError, read_state

from .builder import build_split, label_space


def without_weight_files(cfg: Any) -> Any:
    """``cfg`` with ``model.pretrained`` and ``fewshot.backbone_checkpoint`` unset: a checkpoint or
    an export holds every weight (an HDMNet's frozen backbone included), so neither the ImageNet
    file nor the stage-one checkpoint is needed to test, infer or export."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=None),
                               fewshot=dataclasses.replace(cfg.fewshot, backbone_checkpoint=None))


def describe(cfg_dict: dict, classes: Optional[list]) -> str:
    """``method 'pico', 22 classes, fcn/resnet18``: what a run was trained with (or a config has)."""
    model = cfg_dict.get("model", {})
    n = "?" if classes is None else len(classes)
    name = cfg_dict.get("method", {}).get("name")
    return f"method {name!r}, {n} classes, {model.get('arch')}/{model.get('backbone')}"


def load_weights_checked(method: torch.nn.Module, path: str | Path, state: dict, cfg: Any, classes: Optional[list],
                         strict: bool = True, weights: Optional[dict] = None,
                         by_count: bool = False) -> tuple[list, list]:
    """Loads ``weights`` (default ``state['model']``) into ``method``; a checkpoint of another
    method (``strict``), class list or model is refused with one line saying what it was trained
    with and what ``cfg`` has. ``by_count`` compares the number of classes only (inference: the
    names may come from another source than the training run's).

    Raises:
        CheckpointError: ``{path}: trained with ...; this config has ...; ...``.
    """
    meta = state.get("meta") or {}
    old_cfg, old_classes = meta.get("config") or {}, meta.get("classes", state.get("classes"))
    here = describe(config_to_dict(cfg), None if classes is None else list(classes))
    there = describe(old_cfg, old_classes) if old_cfg else f"{'?' if old_classes is None else len(old_classes)} classes"
    hint = "use a checkpoint of this config" if strict else "load_from needs the same model and classes"
    same = (lambda x, y: len(x) == len(y)) if by_count else (lambda x, y: list(x) == list(y))
    differs = (old_classes is not None and classes is not None and not same(old_classes, classes)) or (
        strict and old_cfg.get("method", {}).get("name") not in (None, cfg.method.name))
    if differs:
        raise CheckpointError(f"{path}: trained with {there}; this config has {here}; {hint}")
    try:
        return method.load_state_dict(state["model"] if weights is None else weights, strict=strict)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1].strip() if "\n\t" in str(exc) else ""
        raise CheckpointError(f"{path}: trained with {there}; this config has {here}; its weights do not fit "
                              f"({first[:160]}); {hint}") from None


def load_trained(cfg: Any, ckpt: str | Path, num_classes: int, taxonomy=None, device="cpu",
                 classes: Optional[list] = None):
    """Builds ``cfg``'s method and loads a training checkpoint or an exported model into it
    (the file is read once); with ``classes`` (the config's class names) a file of another class
    list is refused by name.

    Returns:
        The method in eval mode on ``device``.

    Raises:
        CheckpointError: an unreadable file, or one of another method, class list or model.
    """
    state = read_state(ckpt)
    method = build_method(without_weight_files(cfg), num_classes, taxonomy)
    if isinstance(state, dict) and "segmentor" in state:  # an exported model
        target = method.segmentor if hasattr(method, "segmentor") else method.deployable()
        load_weights_checked(target, ckpt, {"classes": state.get("classes")}, cfg, classes, weights=state["segmentor"],
                             by_count=True)
    elif isinstance(state, dict) and "model" in state:  # a training checkpoint
        load_weights_checked(method, ckpt, state, cfg, classes, by_count=True)
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
    return Trained(dataset, k, names, palette, load_trained(cfg, ckpt, k, dataset.taxonomy, device, names))
