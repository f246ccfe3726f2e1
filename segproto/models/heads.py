"""Decode heads: DeepLabV3+ and an mmseg-style FCN head.

Every head maps the backbone's feature list to ``(logits, feats)``:

* ``logits`` ``[B, num_classes, h, w]`` at the decoder's stride (4 for DeepLabV3+, the input
  feature's stride for FCN);
* ``feats`` ``[B, channels, h, w]``: the penultimate decoder map, i.e. what the classifier sees
  (before the dropout, which is the only op in between). Projection/prototype heads consume it.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBNReLU", "ASPP", "DeepLabV3PlusHead", "FCNHead", "aspp_dilations"]


class ConvBNReLU(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU`` with 'same' padding."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


def aspp_dilations(output_stride: int) -> Tuple[int, int, int]:
    """ASPP rates for a high-level feature of the given stride.

    (6, 12, 18) at stride 16 and (12, 24, 36) at stride 8 (DeepLabV3); other strides scale the
    same receptive field (e.g. (3, 6, 9) at stride 32).
    """
    scale = 16 / output_stride
    return tuple(max(1, round(r * scale)) for r in (6, 12, 18))  # type: ignore[return-value]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with an image-pooling branch.

    Branches: 1x1 conv, three dilated 3x3 convs, global average pool + 1x1 conv (broadcast back);
    concatenated and projected by a 1x1 conv. Note: the pooled branch has BatchNorm on a 1x1 map,
    so training needs a batch of at least 2 per device.
    """

    def __init__(self, cin: int, cout: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(cin, cout, 1)] + [ConvBNReLU(cin, cout, 3, d) for d in dilations]
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNReLU(cin, cout, 1))
        self.project = ConvBNReLU(cout * (len(dilations) + 2), cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``[B, C_in, h, w]``. Returns ``[B, C_out, h, w]``."""
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])  # [B, C, h, w]
        outs = [branch(x) for branch in self.branches] + [pooled]
        return self.project(torch.cat(outs, dim=1))  # [B, C_out, h, w]


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ decoder: ASPP on the high-level feature, fused with the low-level one.

    Args:
        in_channels: Channels of the backbone features (only ``[0]`` and ``[-1]`` are used).
        num_classes: Number of output classes.
        output_stride: Stride of the high-level feature (selects the ASPP rates).
        channels: Width of ASPP and decoder convs (256).
        low_level_channels: Projection width of the low-level feature (48).
        dropout: Dropout before the classifier.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        output_stride: int = 16,
        channels: int = 256,
        low_level_channels: int = 48,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.stride_index = 0  # logits come out at features[0]'s stride
        self.aspp = ASPP(in_channels[-1], channels, aspp_dilations(output_stride))
        self.low_proj = ConvBNReLU(in_channels[0], low_level_channels, 1)
        self.fuse = nn.Sequential(
            ConvBNReLU(channels + low_level_channels, channels, 3),
            ConvBNReLU(channels, channels, 3),
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """Args: features, fine to coarse. Returns ``(logits, feats)`` at ``features[0]``'s size."""
        low, high = features[0], features[-1]  # [B, C_low, H/4, W/4], [B, C_high, h, w]
        x = self.aspp(high)  # [B, C, h, w]
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([x, self.low_proj(low)], dim=1)  # [B, C + 48, H/4, W/4]
        feats = self.fuse(x)  # [B, C, H/4, W/4]
        logits = self.classifier(self.dropout(feats))  # [B, K, H/4, W/4]
        return logits, feats


class FCNHead(nn.Module):
    """mmseg-style FCN head: ``num_convs`` convs (+ optional concat-input conv), classifier.

    Args:
        in_channels: Channels of the backbone features.
        num_classes: Number of output classes.
        channels: Width of the convs (256).
        num_convs: Number of ConvBNReLU layers (2).
        kernel_size: Their kernel size (3).
        concat_input: Concatenate the input with the conv output and fuse by a 3x3 conv.
        input_transform: ``"last"`` uses ``features[-1]``; ``"concat"`` resizes every feature to
            ``features[0]``'s size and concatenates them (HRNetV2 representation).
        dropout: Dropout before the classifier.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        num_convs: int = 2,
        kernel_size: int = 3,
        concat_input: bool = True,
        input_transform: str = "last",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if input_transform not in ("last", "concat"):
            raise ValueError(f"input_transform must be 'last' or 'concat', got {input_transform!r}")
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.channels = channels
        self.input_transform = input_transform
        self.stride_index = -1 if input_transform == "last" else 0  # which feature sets the size
        cin = sum(in_channels) if input_transform == "concat" else in_channels[-1]
        self.convs = nn.Sequential(
            *[
                ConvBNReLU(cin if i == 0 else channels, channels, kernel_size)
                for i in range(num_convs)
            ]
        )
        self.conv_cat = ConvBNReLU(cin + channels, channels, kernel_size) if concat_input else None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def _transform(self, features: List[Tensor]) -> Tensor:
        if self.input_transform == "last":
            return features[-1]
        size = features[0].shape[-2:]
        resized = [features[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]
        ]
        return torch.cat(resized, dim=1)  # [B, sum(C_i), h0, w0]

    def forward(self, features: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """Args: features, fine to coarse. Returns ``(logits, feats)`` at the input's size."""
        x = self._transform(features)  # [B, C_in, h, w]
        feats = self.convs(x)  # [B, C, h, w]
        if self.conv_cat is not None:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))  # [B, C, h, w]
        logits = self.classifier(self.dropout(feats))  # [B, K, h, w]
        return logits, feats
