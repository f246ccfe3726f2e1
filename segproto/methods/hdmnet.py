"""HDMNet few-shot method: the model, cross-entropy and the correlation distillation.

Episodic (``episodic = True``): the trainer passes each query batch with its supports,
``method(img, gt, it, support_img=..., support_mask=...)``. Training returns
``{"loss_ce", "loss_distill", diagnostics}`` (methods.md section 4: loss = CE(final) + L_distill,
the distillation weighted by ``fewshot.distill_weight``); eval returns ``[B, 2, H, W]`` logits
(background, foreground). The distillation is loss-only: :meth:`HDMNetMethod.deployable` is the
bare :class:`~segproto.models.hdmnet.HDMNet`, at zero inference overhead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor

from segproto.losses.hdmnet import correlation_distillation_loss
from segproto.models.hdmnet import HDMNet

from .protocol import Method, register_method

__all__ = ["HDMNetMethod", "backbone_state_from_checkpoint", "hdmnet_kwargs", "stage_one_checkpoint"]

_PREFIX = "segmentor.backbone."


def hdmnet_kwargs(cfg: Any, pretrained: bool = True) -> dict[str, Any]:
    """``HDMNet`` constructor arguments of a config (plain values: an export stores them);
    ``pretrained=False`` leaves out the ImageNet weights file."""
    m, f = cfg.model, cfg.fewshot
    return {"backbone": m.backbone, "pretrained": m.pretrained if pretrained else None,
            "strict": m.pretrained_strict, "dim": f.dim, "temperature": f.temperature,
            "prior_scale": f.prior_scale, "match_tile": f.match_tile, "feature_cache_mb": f.feature_cache_mb,
            **dict(m.backbone_kwargs)}


def stage_one_checkpoint(cfg: Any) -> str:
    """The stage-one checkpoint of ``fewshot.backbone_checkpoint`` (``{fold}`` and ``{shots}``
    substituted): a file as given, or a stage-one work dir's last checkpoint (its
    ``last_checkpoint``, else its highest ``iter_N.pth``).

    Raises:
        CheckpointError: One line naming the key, the path and what was expected there.
    """
    from segproto.utils.checkpoint import CheckpointError, find_last_checkpoint

    f = cfg.fewshot
    path = Path(str(f.backbone_checkpoint).format(fold=f.fold, shots=f.shots)).expanduser()
    if path.is_dir():
        last = find_last_checkpoint(path)
        if last is None:
            raise CheckpointError(f"fewshot.backbone_checkpoint: work dir {path} holds no checkpoint "
                                    f"(expected last_checkpoint or iter_N.pth of a finished stage-one run)")
        return str(last)
    if not path.is_file():
        raise CheckpointError(f"fewshot.backbone_checkpoint: {path} not found (expected a stage-one "
                                f"checkpoint file or its work dir; train configs/hdmnet/base_*.yaml first)")
    return str(path)


def backbone_state_from_checkpoint(path: str) -> dict[str, Tensor]:
    """Backbone weights (keys relative to the backbone) of a segproto training checkpoint.

    Args:
        path: A checkpoint of a segproto run whose model holds ``segmentor.backbone.*``
            (e.g. the stage-one CE run on the base classes).

    Raises:
        ValueError: The checkpoint has no ``segmentor.backbone.*`` keys.
    """
    from segproto.utils.checkpoint import load_checkpoint

    model = load_checkpoint(path)["model"]
    state = {k[len(_PREFIX):]: v for k, v in model.items() if k.startswith(_PREFIX)}
    if not state:
        raise ValueError(f"fewshot.backbone_checkpoint: {path} has no '{_PREFIX}*' weights (keys start like "
                         f"{sorted(model)[:3]}); expected a checkpoint of a segproto CE (stage-one) run")
    return state


@register_method("hdmnet")
class HDMNetMethod(Method):
    """HDMNet + CE + correlation distillation. Trainable: everything but the frozen backbone.

    Args:
        model: The few-shot model.
        distill_weight: Weight of ``L_distill`` (0: the term is left out).
        ignore_index: Query label ignored by the CE (255). The distillation treats it as background.
    """

    episodic = True

    def feature_cache(self):
        """The frozen backbone's evaluation memo (:meth:`HDMNet.cached_backbone`)."""
        return self.model.cached_backbone()

    def __init__(self, model: HDMNet, distill_weight: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        self.model = model
        self.distill_weight = distill_weight
        self.ignore_index = ignore_index

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int = 2, taxonomy=None) -> "HDMNetMethod":
        """Builds from ``cfg.model`` (backbone, pretrained) and ``cfg.fewshot``.

        ``num_classes`` and ``taxonomy`` are unused: the model always predicts background /
        foreground of the episode's class. With ``fewshot.backbone_checkpoint`` set, its
        ``segmentor.backbone.*`` weights replace the (ImageNet) initial ones; ``{fold}`` and ``{shots}``
        in the path are substituted. The backbone
        always runs at output stride 8 (``model.output_stride`` is not used).
        """
        f = cfg.fewshot
        model = HDMNet(**hdmnet_kwargs(cfg))
        if f.backbone_checkpoint:
            path = stage_one_checkpoint(cfg)
            model.load_backbone_state(backbone_state_from_checkpoint(path), f"fewshot.backbone_checkpoint {path}")
        return cls(model, f.distill_weight, cfg.data.ignore_index)

    @classmethod
    def deployable_key(cls, cfg: Any) -> str:
        return "model"

    @classmethod
    def build_deployable(cls, cfg: Any, num_classes: int = 2) -> HDMNet:
        """An untrained HDMNet of ``cfg`` for a checkpoint that holds every weight, backbone
        included: neither the ImageNet file nor the stage-one checkpoint is read."""
        return HDMNet(**hdmnet_kwargs(cfg, pretrained=False))

    def forward(self, img: Tensor, gt: Optional[Tensor] = None, it: int = 0, *,
                support_img: Optional[Tensor] = None, support_mask: Optional[Tensor] = None) -> Any:
        """Args: img ``[B, 3, H, W]`` queries; gt ``[B, H, W]`` query mask (0/1/255, training
        only); support_img ``[B, K, 3, H, W]``; support_mask ``[B, K, H, W]`` (1 = foreground).

        Returns:
            Training: ``loss_ce``, ``loss_distill`` (when ``distill_weight > 0``) and the scalar
            diagnostics ``distill`` (unweighted ``L_distill``) and ``pred_fg`` (share of query
            pixels predicted foreground). Eval: logits ``[B, 2, H, W]``.
        """
        if support_img is None or support_mask is None:
            raise ValueError("hdmnet is episodic: forward needs support_img [B, K, 3, H, W] and "
                             "support_mask [B, K, H, W]")
        out = self.model(img, support_img, support_mask)
        if not self.training:
            return out["logits"]
        if gt is None:
            raise ValueError("training forward needs the query mask `gt` [B, H, W]")
        if tuple(gt.shape) != (img.shape[0], *img.shape[-2:]):
            raise ValueError(f"gt must be [B, H, W] = {(img.shape[0], *img.shape[-2:])}, got {tuple(gt.shape)}")
        logits = out["logits"]  # [B, 2, H, W]
        losses = {"loss_ce": F.cross_entropy(logits.float(), gt.long(), ignore_index=self.ignore_index)}
        diag = {"pred_fg": (logits.detach().argmax(1) == 1).float().mean()}
        if self.distill_weight > 0:
            distill = correlation_distillation_loss(out["maps"], gt)
            losses["loss_distill"] = self.distill_weight * distill
            diag["distill"] = distill.detach()
        return {**losses, **diag}

    def deployable(self) -> HDMNet:
        """The inference model: the bare HDMNet (the distillation adds nothing at inference)."""
        return self.model

    def trainable_parameters(self):
        """Parameters the optimizer should update (the backbone is frozen)."""
        return [p for p in self.parameters() if p.requires_grad]
