"""HDMNet's matching attention: softmax over the QUERY axis (methods.md section 4), tiled over
query positions with a recomputing backward, so the full query x support score matrix never
exists, forward or backward; plus the dense form it is tested against and the correlation map."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from segproto import ops

__all__ = ["query_softmax_attention", "dense_query_softmax_attention", "correlation_map", "COS_EPS"]

COS_EPS = 1e-7  # norm clamp of the cosine, as segproto.ops.masked_cosine_correlation


def _tiles(n: int, tile: int):
    return [(i, min(i + tile, n)) for i in range(0, n, tile)]


class _QuerySoftmaxAttention(torch.autograd.Function):
    """``out = (softmax_q(qn kn^T * scale) * m) v`` over query tiles, never the full score matrix.

    Forward: pass 1 accumulates the per-column log-sum-exp over query tiles, pass 2 forms each
    tile's attention and output. Backward (recomputing tiles): with ``A = P m``,
    ``dv = sum_tiles A^T dout``; ``D(s) = sum_q P dP = v(s) . dv(s)``; then per tile
    ``dS = P (m (dout v^T) - D) * scale``, ``dq = dS kn``, ``dk += dS^T qn``. Tile work is done
    in place: at most two ``[B, h, tile, Ls]`` blocks are alive at any time.
    """

    @staticmethod
    def forward(ctx, qn: Tensor, kn: Tensor, v: Tensor, mask: Tensor, scale: float, tile: int) -> Tensor:
        m = mask.to(qn.dtype)[:, None, None, :]  # [B, 1, 1, Ls]
        qs, kt = qn * scale, kn.transpose(-1, -2)  # scores = qs @ kt
        lse = qn.new_full((*kn.shape[:2], 1, kn.shape[2]), float("-inf"))  # [B, h, 1, Ls]
        spans = _tiles(qn.shape[2], tile)
        for a, b in spans:
            s = torch.matmul(qs[:, :, a:b], kt)  # [B, h, t, Ls]
            mx = s.amax(2, keepdim=True)
            lse = torch.logaddexp(lse, s.sub_(mx).exp_().sum(2, keepdim=True).log_().add_(mx))
        out = qn.new_empty((*qn.shape[:3], v.shape[-1]))  # [B, h, Lq, dv]
        for a, b in spans:
            out[:, :, a:b] = torch.matmul(_probs(qs[:, :, a:b], kt, lse).mul_(m), v)
        ctx.save_for_backward(qs, kn, v, m, lse)
        ctx.scale, ctx.tile = scale, tile
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout: Tensor):
        qs, kn, v, m, lse = ctx.saved_tensors
        spans, kt = _tiles(qs.shape[2], ctx.tile), kn.transpose(-1, -2)
        dv = torch.zeros_like(v)  # [B, h, Ls, dv]
        for a, b in spans:
            att = _probs(qs[:, :, a:b], kt, lse).mul_(m)  # [B, h, t, Ls]
            dv += torch.matmul(att.transpose(-1, -2), dout[:, :, a:b])
        dsum = (v * dv).sum(-1)[:, :, None, :]  # [B, h, 1, Ls]
        dq, dk = torch.empty_like(qs), torch.zeros_like(kn)
        for a, b in spans:
            p = _probs(qs[:, :, a:b], kt, lse)
            ds = torch.matmul(dout[:, :, a:b], v.transpose(-1, -2)).mul_(m).sub_(dsum).mul_(p)  # dS / scale
            del p
            dq[:, :, a:b] = torch.matmul(ds, kn).mul_(ctx.scale)
            dk += torch.matmul(ds.transpose(-1, -2), qs[:, :, a:b])  # qs carries the scale
        return dq, dk, dv, None, None, None


def _probs(qs: Tensor, kt: Tensor, lse: Tensor) -> Tensor:
    """``exp(qs @ kt - lse)``: one tile of the query-axis softmax, computed in place."""
    return torch.matmul(qs, kt).sub_(lse).exp_()


def _check_attention_args(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be [B, heads, L, d]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if k.shape[:3] != v.shape[:3] or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q [B, h, Lq, d], k [B, h, Ls, d] and v [B, h, Ls, dv] disagree: "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if mask.shape != (k.shape[0], k.shape[2]):
        raise ValueError(f"mask must be [B, Ls] = {(k.shape[0], k.shape[2])}, got {tuple(mask.shape)}")


def correlation_map(qn: Tensor, kn: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """``w(q) = sum_s S(q, s) m(s) / (sum_s m(s) + 1e-9)``, mean over heads, without ``[Lq, Ls]``.

    S is linear in the key, so ``w(q) = qn . (sum_s m(s) kn(s)) / (temperature (sum_s m + 1e-9))``:
    the masked mean of the masked-cosine scores as one ``[B, h, d]`` reduction (exact for binary
    masks, where ``m^2 = m``). Args: unit ``qn [B, h, Lq, d]``, ``kn [B, h, Ls, d]``, ``mask [B, Ls]``.
    Returns ``[B, Lq]``.
    """
    m = mask.to(qn.dtype)  # [B, Ls]
    kbar = torch.einsum("bhsd,bs->bhd", kn, m) / (temperature * (m.sum(1) + 1e-9))[:, None, None]
    return torch.einsum("bhqd,bhd->bhq", qn, kbar).mean(1)


def query_softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, temperature: float,
                            tile: int) -> Tuple[Tensor, Tensor]:
    """HDMNet matching attention, tiled over query positions (outputs and gradients exact).

    ``S = cos(q, k) / temperature``; ``out = (softmax over the query axis of S) * m(s) @ v``;
    peak extra memory ``O(B * heads * tile * Ls)`` in forward and backward (the autograd graph
    keeps no score matrix). Computed in at least float32, with autocast off.

    Args:
        q: ``[B, heads, Lq, d]``; k: ``[B, heads, Ls, d]``; v: ``[B, heads, Ls, dv]``.
        mask: ``[B, Ls]`` support foreground in {0, 1} (not differentiated).
        temperature: Score temperature (> 0). tile: Query positions per tile (>= 1).

    Returns:
        ``out [B, heads, Lq, dv]`` and the correlation map ``w [B, Lq]`` (see :func:`correlation_map`).
    """
    _check_attention_args(q, k, v, mask)
    if tile < 1:
        raise ValueError(f"tile must be >= 1 query positions, got {tile}")
    dt = torch.promote_types(q.dtype, torch.float32)  # scores / 0.1 and exp: never in half
    with torch.autocast(q.device.type, enabled=False):
        qn, kn = F.normalize(q.to(dt), dim=-1, eps=COS_EPS), F.normalize(k.to(dt), dim=-1, eps=COS_EPS)
        out = _QuerySoftmaxAttention.apply(qn, kn, v.to(dt), mask.detach(), 1.0 / temperature, int(tile))
        return out, correlation_map(qn, kn, mask.detach(), temperature)


def dense_query_softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor,
                                  temperature: float) -> Tuple[Tensor, Tensor]:
    """The untiled formula (full ``[B, heads, Lq, Ls]`` scores through autograd), for comparison."""
    _check_attention_args(q, k, v, mask)
    b, h, lq, d = q.shape
    m = mask.to(q.dtype)
    corr = ops.masked_cosine_correlation(q.reshape(b * h, lq, d).transpose(1, 2),
                                         k.reshape(b * h, -1, d).transpose(1, 2),
                                         m.repeat_interleave(h, 0)).view(b, h, lq, -1) / temperature
    att = torch.softmax(corr, dim=2) * m[:, None, None, :]  # softmax over the QUERY axis
    w = (corr * m[:, None, None, :]).sum(-1) / (m.sum(1)[:, None, None] + 1e-9)
    return torch.matmul(att, v), w.mean(1)
