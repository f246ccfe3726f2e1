"""Training-only projection head producing unit-norm pixel embeddings."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """Maps decoder features to L2-normalised embeddings (dropped at deployment).

    ``kind="convmlp"``: 1x1 conv -> BN -> ReLU -> 1x1 conv to ``proj_dim``;
    ``kind="linear"``: a single 1x1 conv to ``proj_dim``. The output is normalised over channels.

    Args:
        in_channels: Channels of the decoder features (``Segmentor.feat_channels``).
        proj_dim: Embedding dimension D (256).
        kind: ``"convmlp"`` or ``"linear"``.
    """

    def __init__(self, in_channels: int, proj_dim: int = 256, kind: str = "convmlp") -> None:
        super().__init__()
        if kind == "convmlp":
            self.proj = nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 1, bias=False),
                nn.BatchNorm2d(in_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, proj_dim, 1),
            )
        elif kind == "linear":
            self.proj = nn.Conv2d(in_channels, proj_dim, 1)
        else:
            raise ValueError(f"kind must be 'convmlp' or 'linear', got {kind!r}")
        self.kind = kind
        self.proj_dim = proj_dim

    def forward(self, feats: Tensor, normalize: bool = True) -> Tensor:
        """Args: feats ``[B, C, h, w]``; ``normalize=False`` returns the embeddings before the
        normalisation (for callers that normalise only the pixels they use: a loss on a few hundred
        anchors need not pay the full map's normalisation and its backward).

        Returns: unit-norm embeddings ``[B, D, h, w]`` (un-normalised with ``normalize=False``)."""
        emb = self.proj(feats)  # [B, D, h, w]
        return F.normalize(emb, p=2.0, dim=1) if normalize else emb
