"""The plain cross-entropy method, which every other method extends."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segproto.models import Segmentor, build_segmentor

from .protocol import Method, register_method


def resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of [B, K, h, w] logits to the label size (align_corners=False)."""
    if logits.shape[-2:] == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def labels_at(gt: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of [B, H, W] labels to an embedding's [h, w]."""
    if gt.shape[-2:] == tuple(size):
        return gt
    return F.interpolate(gt[:, None].float(), size=size, mode="nearest")[:, 0].long()


class SegMethod(Method):
    """Segmentor + training-only parts. Subclasses override :meth:`extra_losses`."""

    def __init__(self, segmentor: Segmentor, num_classes: int, ignore_index: int = 255,
                 ce_weight: float = 1.0, class_weight: Optional[list[float]] = None) -> None:
        super().__init__()
        self.segmentor = segmentor
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.ce_weight = ce_weight
        self.register_buffer("class_weight", None if class_weight is None else torch.tensor(class_weight))

    def forward(self, img: Tensor, gt: Optional[Tensor] = None, it: int = 0) -> Any:
        if not self.training:
            return self.segmentor(img)
        if gt is None:
            raise ValueError("training forward needs labels `gt` [B, H, W]")
        out = self.segmentor(img)  # {"logits", "feats", "backbone"}
        logits = resize_logits(out["logits"], gt.shape[-2:])
        losses = {"loss_ce": self.ce_weight * F.cross_entropy(
            logits.float(), gt, weight=self.class_weight, ignore_index=self.ignore_index)}
        losses.update(self.extra_losses(out, gt, it))
        return losses

    def extra_losses(self, out: dict, gt: Tensor, it: int) -> dict[str, Tensor]:
        """Method-specific loss terms and diagnostics (none for plain CE)."""
        return {}

    def deployable(self) -> Segmentor:
        """The inference model: the segmentor alone, no training-only parts."""
        return self.segmentor

    @classmethod
    def deployable_key(cls, cfg: Any) -> str:
        """Prefix of :meth:`deployable`'s weights in the method's state dict (``segproto.load_model``
        reads a training checkpoint without building the training-only parts)."""
        return "segmentor"

    @classmethod
    def build_deployable(cls, cfg: Any, num_classes: int) -> nn.Module:
        """An untrained :meth:`deployable` of ``cfg``, its weights left for a checkpoint
        (no pretrained file is read)."""
        import dataclasses

        model_cfg = dataclasses.replace(cfg.model, pretrained=None, sync_bn=False) if dataclasses.is_dataclass(cfg.model) else \
            {**dict(cfg.model), "pretrained": None, "sync_bn": False}
        return build_segmentor(model_cfg, num_classes)


@register_method("ce")
class CEMethod(SegMethod):
    """Plain pixel-wise cross-entropy (the baseline)."""

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int, taxonomy=None) -> "CEMethod":
        return cls(build_segmentor(cfg.model, num_classes), num_classes, cfg.data.ignore_index,
                   cfg.loss.ce.weight, cfg.loss.ce.class_weight)
