"""HDMNet's transformer pieces: token/map reshapes, MixFFN, efficient (spatial-reduction)
self-attention, encoder layers, the self-attention hierarchy stages and the matching layer."""

from __future__ import annotations

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from .hdmnet_attention import query_softmax_attention

__all__ = ["MixFFN", "EfficientSelfAttention", "EncoderLayer", "HierarchyStage", "MatchLayer"]


def _to_map(x: Tensor, hw: Tuple[int, int]) -> Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *hw)  # [B, L, C] -> [B, C, h, w]


def _to_tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, h*w, C]


class MixFFN(nn.Module):
    """1x1 conv -> 3x3 depthwise conv -> GELU -> 1x1 conv (SegFormer), on ``[B, L, C]`` tokens."""

    def __init__(self, dim: int, ratio: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = dim * ratio
        self.net = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
                                 nn.GELU(), nn.Dropout(dropout), nn.Conv2d(hidden, dim, 1), nn.Dropout(dropout))

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        return _to_tokens(self.net(_to_map(x, hw)))


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a map reduced ``sr`` times per side.

    The reduction conv (kernel = stride = sr) sees the map zero-padded up to a multiple of sr, so
    an ``h x w`` map reduces to ``ceil(h/sr) x ceil(w/sr) >= 1x1`` (tiny maps never fail).
    """

    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.sr = heads, sr
        self.q, self.kv = nn.Linear(dim, dim, bias=False), nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.reduce, self.norm = nn.Conv2d(dim, dim, sr, stride=sr), nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        b, n, c = x.shape
        src = x
        if self.sr > 1:
            ph, pw = -hw[0] % self.sr, -hw[1] % self.sr
            src = self.norm(_to_tokens(self.reduce(F.pad(_to_map(x, hw), (0, pw, 0, ph)))))
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)  # [B, heads, L, d]
        k, v = self.kv(src).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, d]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class EncoderLayer(nn.Module):
    """Pre-norm ``x + attn(LN(x))``, then ``x + MixFFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.ffn = EfficientSelfAttention(dim, heads, sr), MixFFN(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return x + self.ffn(self.norm2(x), hw)


class HierarchyStage(nn.Module):
    """Overlapping patch embedding (stride 1 or 2) + LN, two self-attention layers, LN."""

    def __init__(self, dim: int, heads: int, sr: int, stride: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        kernel = 1 if stride == 1 else 3
        self.embed, self.embed_norm = nn.Conv2d(dim, dim, kernel, stride, kernel // 2), nn.LayerNorm(dim, eps=1e-6)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, sr, mlp_ratio, dropout) for _ in range(2))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)  # [N, C, h, w]
        hw = (x.shape[2], x.shape[3])
        t = self.embed_norm(_to_tokens(x))
        for layer in self.layers:
            t = layer(t, hw)
        return _to_map(self.norm(t), hw)


class MatchLayer(nn.Module):
    """Cross attention query -> support (see :func:`query_softmax_attention`) + MixFFN."""

    def __init__(self, dim: int, heads: int, temperature: float, tile: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by the matching heads {heads}")
        self.heads, self.temperature, self.tile = heads, temperature, tile
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.proj, self.ffn = nn.Linear(dim, dim), MixFFN(dim, mlp_ratio, dropout)

    def forward(self, xq: Tensor, hw: Tuple[int, int], xs: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """xq ``[B, Lq, C]``, xs ``[B, Ls, C]``, mask ``[B, Ls]`` -> (``[B, Lq, C]``, ``w [B, Lq]``)."""
        b, lq, c = xq.shape
        heads = lambda t: t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        nq, ns = self.norm1(xq), self.norm1(xs)
        out, w = query_softmax_attention(heads(self.q(nq)), heads(self.k(ns)), heads(self.v(ns)), mask,
                                         self.temperature, self.tile)
        x = xq + self.proj(out.transpose(1, 2).reshape(b, lq, c))
        return x + self.ffn(self.norm2(x), hw), w
