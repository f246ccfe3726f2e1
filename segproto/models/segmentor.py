"""Encoder-decoder segmentor and its config-driven builder.

The segmentor is the deployed model: training-only heads (projection, prototypes, memories)
live in the method, outside it, and read the training dict returned here.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone, build_backbone
from .heads import DeepLabV3PlusHead, FCNHead

__all__ = ["Segmentor", "build_segmentor", "ARCHS"]

ARCHS = ("deeplabv3plus", "fcn")
_OUTPUT_STRIDES = (8, 16, 32)


class Segmentor(nn.Module):
    """Backbone + decode head.

    ``forward(img)`` with ``img`` ``[B, 3, H, W]``:

    * eval: logits ``[B, K, H, W]`` (bilinear, ``align_corners=False``);
    * training: ``{"logits": [B, K, h, w] at the decoder stride, "feats": [B, C, h, w] decoder
      features (classifier input), "backbone": [stage features, fine to coarse]}``.

    Attributes:
        feat_channels: C, channels of ``feats`` (for a ``ProjectionHead``).
        logit_stride: Stride of the training ``logits``/``feats`` w.r.t. the input.
    """

    def __init__(self, backbone: Backbone, decode_head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head

    @property
    def feat_channels(self) -> int:
        return int(self.decode_head.channels)

    @property
    def logit_stride(self) -> int:
        return int(self.backbone.strides[getattr(self.decode_head, "stride_index", 0)])

    def forward(self, img: Tensor) -> Union[Tensor, Dict[str, Any]]:
        """See the class docstring for the outputs."""
        features: List[Tensor] = self.backbone(img)  # fine to coarse
        logits, feats = self.decode_head(features)  # [B, K, h, w], [B, C, h, w]
        if self.training:
            return {"logits": logits, "feats": feats, "backbone": features}
        return F.interpolate(logits, size=img.shape[-2:], mode="bilinear", align_corners=False)


def _get(cfg: Any, key: str, default: Any) -> Any:
    """Reads ``key`` from a mapping or an attribute object, with a default."""
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _head_input(cfg: Any, backbone_name: str) -> str:
    head_input: Optional[str] = _get(cfg, "head_input", None)
    if head_input is None:
        return "concat" if backbone_name.startswith("timm:hrnet") else "last"
    if head_input not in ("last", "concat"):
        raise ValueError(f"head_input: must be 'last' or 'concat', got {head_input!r}")
    return head_input


def _build_head(
    cfg: Any, arch: str, backbone_name: str, backbone: Backbone, num_classes: int
) -> nn.Module:
    """The decode head for ``arch`` on top of ``backbone``."""
    channels = int(_get(cfg, "channels", 256))
    dropout = float(_get(cfg, "dropout", 0.1))
    if arch == "deeplabv3plus":
        head: nn.Module = DeepLabV3PlusHead(
            backbone.channels, num_classes, backbone.output_stride, channels, dropout=dropout
        )
    else:
        # "last": mmseg FCN (2 convs + concat-input conv); "concat": HRNetV2/PiCo head
        # (resize-concat all branches, one 3x3 ConvBNReLU, dropout, classifier).
        head_input = _head_input(cfg, backbone_name)
        concat = head_input == "concat"
        head = FCNHead(
            backbone.channels,
            num_classes,
            channels,
            num_convs=1 if concat else 2,
            concat_input=not concat,
            input_transform=head_input,
            dropout=dropout,
        )
    return head


def build_segmentor(model_cfg: Any, num_classes: int) -> Segmentor:
    """Builds a :class:`Segmentor` from a model config (mapping or attribute object).

    Keys (defaults): ``arch`` ("deeplabv3plus" | "fcn"), ``backbone`` ("resnet101"; or
    "timm:<name>"), ``output_stride`` (16; 8/16, 32 = undilated, null = native for timm),
    ``pretrained`` (None | path | "cache"), ``channels`` (256), ``dropout`` (0.1), ``sync_bn``
    (False), and the optional ``pretrained_strict`` (True), ``backbone_kwargs`` ({}, timm only),
    ``head_input`` (FCN input: "last" | "concat"; default "concat" for timm HRNets).

    Args:
        model_cfg: The model section of the config.
        num_classes: Number of output classes.

    Returns:
        The segmentor, with BatchNorm converted to SyncBatchNorm when ``sync_bn``.

    Raises:
        ValueError: Naming the offending key for an unknown arch, backbone or output stride.
    """
    arch = _get(model_cfg, "arch", "deeplabv3plus")
    if arch not in ARCHS:
        raise ValueError(f"arch: unknown architecture {arch!r}; use one of {ARCHS}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    name = str(_get(model_cfg, "backbone", "resnet101"))
    output_stride = _get(model_cfg, "output_stride", 16)
    native_ok = output_stride is None and name.startswith("timm:")
    if output_stride not in _OUTPUT_STRIDES and not native_ok:
        raise ValueError(
            f"output_stride: must be 8 or 16 (32 = no dilation; null = native, timm only), "
            f"got {output_stride!r}"
        )
    backbone = build_backbone(
        name,
        output_stride=output_stride,
        pretrained=_get(model_cfg, "pretrained", None),
        strict=bool(_get(model_cfg, "pretrained_strict", True)),
        **dict(_get(model_cfg, "backbone_kwargs", None) or {}),
    )
    model = Segmentor(backbone, _build_head(model_cfg, arch, name, backbone, num_classes))
    if _get(model_cfg, "sync_bn", False):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
