"""Optimizer and the warm-up + poly learning-rate schedule."""

from __future__ import annotations

from torch import nn
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR


def build_optimizer(model: nn.Module, cfg) -> Optimizer:
    """SGD or AdamW over two groups: backbone parameters (``lr``) and the rest, i.e. decoder and
    training-only heads (``lr * head_lr_mult``).

    Args:
        model: The method module; parameters whose name contains ``.backbone.`` or starts with
            ``segmentor.backbone`` form the backbone group.
        cfg: The ``optim`` config section.
    """
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if "backbone." in name else rest).append(p)
    groups = [{"params": backbone, "lr": cfg.lr, "name": "backbone"},
              {"params": rest, "lr": cfg.lr * cfg.head_lr_mult, "name": "head"}]
    groups = [g for g in groups if g["params"]]
    if cfg.type == "sgd":
        return SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def poly_factor(step: int, total: int, warmup_iters: int, warmup_ratio: float, power: float,
                min_ratio: float) -> float:
    """LR multiplier at ``step`` (0-based): poly decay to ``min_ratio``, times a linear warm-up
    from ``warmup_ratio`` to 1 over the first ``warmup_iters`` steps (the mmseg convention)."""
    t = min(step, total)
    factor = (1.0 - min_ratio) * (1.0 - t / total) ** power + min_ratio
    if step < warmup_iters:
        factor *= 1.0 - (1.0 - warmup_ratio) * (1.0 - step / warmup_iters)
    return factor


def build_scheduler(optimizer: Optimizer, sched_cfg, optim_cfg, total_iters: int) -> LambdaLR:
    """One LambdaLR step per iteration; ``min_lr`` is scaled per group with its base lr."""
    min_ratio = sched_cfg.min_lr / optim_cfg.lr

    def fn(step: int) -> float:
        return poly_factor(step, total_iters, sched_cfg.warmup_iters, sched_cfg.warmup_ratio,
                           sched_cfg.power, min_ratio)

    return LambdaLR(optimizer, fn)
