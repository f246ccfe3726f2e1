"""HiPoSeg: hierarchical prototype learning with a staged schedule (training-only extras).

The segmentor predicts the finest trained level; a projection head gives unit-norm pixel
embeddings; one prototype buffer per taxonomy level (finest first) is updated after the loss with
``segproto.ops.prototype_momentum_update_``-style class sums (all-reduced under DDP). The pure loss
terms are in :mod:`segproto.losses.hiposeg`. Formulas, schedule and every choice the paper leaves
open: ``docs/methods/hiposeg.md``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from segproto import ops
from segproto.config.fit import fraction_to_iteration
from segproto.config.sections.hiposeg import HiPoSegLossConfig
from segproto.data.pipeline.taxonomy import Taxonomy
from segproto.losses.hiposeg import (hierarchy_alignment_loss, online_prototypes, pixel_prototype_loss,
                                     prototype_separation_loss)
from segproto.models import ProjectionHead, Segmentor, build_segmentor

from .base import SegMethod, labels_at, resize_logits
from .protocol import register_method

__all__ = ["HiPoSegMethod", "PrototypeBuffer", "stage_starts"]


def _dist():
    """:mod:`segproto.utils.dist`."""
    from segproto.utils import dist

    return dist


class PrototypeBuffer(nn.Module):
    """One level's prototypes ``protos [K, D]`` (a buffer, saved in checkpoints; zero rows = unset)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("protos", torch.zeros(num_classes, dim))

    @torch.no_grad()
    def update_(self, feats: Tensor, labels: Tensor, momentum: float, ignore_index: int) -> None:
        """Momentum update from ``feats [N, D]`` of ``labels [N]`` (``prototype_momentum_update_``);
        under DDP its two halves with the class sums and counts all-reduced in between, so every
        rank applies the same update."""
        dist = _dist()
        if not dist.is_dist():
            ops.prototype_momentum_update_(self.protos, feats, labels, momentum, ignore_index)
            return
        sums, counts = ops.class_sums(feats, labels, self.protos.shape[0], ignore_index, normalize=True)
        ops.prototype_update_(self.protos, dist.all_reduce_sum(sums), dist.all_reduce_sum(counts), momentum)

    def initialised(self) -> Tensor:
        """``[K]`` bool: rows that have been set."""
        return (self.protos != 0).any(dim=1)


def stage_starts(cfg: HiPoSegLossConfig, num_levels: int, total_iters: int) -> tuple[list[int], int]:
    """Iteration after which each level's terms (finest first) and the alignment switch on.

    The finest level starts at ``fine_start``, the coarsest at ``coarse_start``; with more than two
    levels the ones between are spaced linearly (coarse first, as the paper's coarse-to-fine order).
    A term is active at iteration ``it`` (1-based) when ``it > start``.
    """
    fracs = [cfg.fine_start + (cfg.coarse_start - cfg.fine_start) * i / (num_levels - 1) for i in range(num_levels)]
    return ([fraction_to_iteration(f, total_iters) for f in fracs],
            fraction_to_iteration(cfg.align_start, total_iters))


@register_method("hiposeg")
class HiPoSegMethod(SegMethod):
    """Cross-entropy + HiPoSeg prototype terms at every taxonomy level, staged.

    Args:
        segmentor: The deployed model; its training dict gives ``logits`` and ``feats``.
        taxonomy: Levels finest first; ``level`` (the trained level) and every coarser one are used.
        hcfg: The ``loss.hiposeg`` section.
        total_iters: ``train.iters`` (the stage starts are fractions of it).
        level: The level the segmentor predicts (``data.level``).
        ignore_index, ce_weight, class_weight: As :class:`SegMethod`.
    """

    def __init__(self, segmentor: Segmentor, taxonomy: Taxonomy, hcfg: Optional[HiPoSegLossConfig] = None,
                 total_iters: int = 1, level: int = 0, ignore_index: int = 255, ce_weight: float = 1.0,
                 class_weight: Optional[list[float]] = None) -> None:
        levels = list(range(level, taxonomy.num_levels))
        if len(levels) < 2:
            raise ValueError(f"method hiposeg needs a taxonomy with a level above the trained one; "
                             f"{taxonomy.source} has levels {taxonomy.level_names} and data.level is {level}")
        sizes = [taxonomy.num_classes(lv) for lv in levels]
        super().__init__(segmentor, sizes[0], ignore_index, ce_weight, class_weight)
        self.hcfg = c = hcfg if hcfg is not None else HiPoSegLossConfig()
        self.level_names = [taxonomy.level_names[lv] for lv in levels]
        self.proj = ProjectionHead(segmentor.feat_channels, c.proj_dim, c.proj_kind)
        self.prototypes = nn.ModuleList(PrototypeBuffer(k, c.proj_dim) for k in sizes)
        for i, lv in enumerate(levels):  # trained-level id -> level-i id, and level-i id -> parent id
            self.register_buffer(f"to_level_{i}", torch.as_tensor(taxonomy.parent_map(level, lv)), persistent=False)
            if i + 1 < len(levels):
                self.register_buffer(f"parent_{i}", torch.as_tensor(taxonomy.parent_map(lv, lv + 1)), persistent=False)
        self.starts, self.align_start = stage_starts(c, len(levels), total_iters)
        self.weights = [c.weight_fine] + [c.weight_coarse] * (len(levels) - 1)
        # Every rank applies the same all-reduced update: nothing to broadcast at each forward.
        self._ddp_params_and_buffers_to_ignore = [f"prototypes.{i}.protos" for i in range(len(levels))]
        self._announced: set[str] = set()

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int, taxonomy: Optional[Taxonomy] = None) -> "HiPoSegMethod":
        if taxonomy is None:
            raise ValueError("method hiposeg needs a class taxonomy: set data.taxonomy to a taxonomy YAML "
                             "(the synthetic dataset ships taxonomy.yaml and taxonomy_3level.yaml)")
        method = cls(build_segmentor(cfg.model, num_classes), taxonomy, cfg.loss.hiposeg, cfg.train.iters,
                     cfg.data.level, cfg.data.ignore_index, cfg.loss.ce.weight, cfg.loss.ce.class_weight)
        if method.num_classes != num_classes:
            raise ValueError(f"data.taxonomy level {cfg.data.level} has {method.num_classes} classes but the "
                             f"dataset has {num_classes}")
        return method

    @property
    def num_levels(self) -> int:
        return len(self.prototypes)

    # ------------------------------------------------------------------ schedule
    def active(self, it: int) -> tuple[list[bool], bool]:
        """Which level terms (finest first) and whether the alignment are on at iteration ``it``."""
        on = [it > s and w > 0 for s, w in zip(self.starts, self.weights)]
        return on, it > self.align_start and self.hcfg.weight_align > 0

    def _announce(self, it: int, on: list[bool], align: bool) -> None:
        """One log line when a group of terms switches on (rank 0)."""
        names = [f"{n} terms" for n, o in zip(self.level_names, on) if o] + (["alignment"] if align else [])
        new = [n for n in names if n not in self._announced]
        if new and _dist().rank() == 0:
            from segproto.utils.log import echo

            echo(f"hiposeg: iteration {it}: {', '.join(new)} on (active: {', '.join(names)})")
        self._announced.update(new)

    # ------------------------------------------------------------------ the method
    def extra_losses(self, out: dict, gt: Tensor, it: int) -> dict[str, Tensor]:
        """Per-level ``loss_pix_<level>`` (L_fh / L_fl), ``loss_proto_<level>`` (L_hh / L_ll), each
        already weighted, ``loss_align``; zeros while off. Diagnostics: ``stage`` (number of active
        term groups) and ``proto_set_<level>`` (fraction of prototypes initialised)."""
        c = self.hcfg
        emb = self.proj(out["feats"])  # [B, D, h, w]
        size = tuple(emb.shape[-2:])
        labels = labels_at(gt, size).flatten()  # [N] trained-level ids
        with torch.no_grad():
            preds = resize_logits(out["logits"].detach().float(), size).argmax(1).flatten()
        feats = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).float()  # [N, D]
        on, align = self.active(it)
        self._announce(it, on, align)
        zero = emb.sum() * 0.0  # keeps the projection head in the graph while every term is off
        losses: dict[str, Tensor] = {}
        qs, valids, level_labels, level_preds = [], [], [], []
        for i, name in enumerate(self.level_names):
            lab, pred = self._map(labels, i), self._map(preds, i)
            level_labels.append(lab)
            level_preds.append(pred)
            if on[i] or align:
                q, valid = online_prototypes(self.prototypes[i].protos, feats, lab, c.momentum, self.ignore_index)
            else:
                q = valid = None
            qs.append(q)
            valids.append(valid)
            w = self.weights[i]
            losses[f"loss_pix_{name}"] = w * pixel_prototype_loss(feats, lab, q, valid, c.tau, self.ignore_index) \
                if on[i] else zero
            losses[f"loss_proto_{name}"] = w * prototype_separation_loss(q, valid, c.kappa) if on[i] else zero
        if self.num_levels > 1:
            losses["loss_align"] = c.weight_align * sum(
                hierarchy_alignment_loss(qs[i], valids[i], qs[i + 1], valids[i + 1], getattr(self, f"parent_{i}"),
                                         c.sigma1, c.sigma2) for i in range(self.num_levels - 1)) if align else zero
        self.update_prototypes(feats.detach(), level_labels, level_preds)
        diag = {"stage": torch.tensor(float(sum(on) + align), device=emb.device)}
        for name, buf in zip(self.level_names, self.prototypes):
            diag[f"proto_set_{name}"] = buf.initialised().float().mean()
        return {**losses, **diag}

    def _map(self, ids: Tensor, i: int) -> Tensor:
        """Trained-level ids (``ignore_index`` kept) -> level ``i`` ids."""
        if i == 0:
            return ids
        lut = getattr(self, f"to_level_{i}")
        keep = ids != self.ignore_index
        return torch.where(keep, lut[ids.clamp(0, lut.numel() - 1)], ids)

    @torch.no_grad()
    def update_prototypes(self, feats: Tensor, labels: list[Tensor], preds: list[Tensor]) -> None:
        """Momentum update of every level's buffer from the pixels whose prediction is right at that
        level (``update_from: correct``) or from every labelled pixel (``all``)."""
        for buf, lab, pred in zip(self.prototypes, labels, preds):
            if self.hcfg.update_from == "correct":
                lab = torch.where(pred == lab, lab, torch.full_like(lab, self.ignore_index))
            buf.update_(feats, lab, self.hcfg.momentum, self.ignore_index)
