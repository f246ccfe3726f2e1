"""PRCL's mutual likelihood score (MLS) between Gaussian embeddings, with a closed-form backward
that works in row blocks, so the ``[N, M, D]`` difference tensor never exists whole
(``docs/methods/prcl.md``)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["mutual_likelihood_score", "mutual_likelihood_score_indexed", "compute_dtype"]


def compute_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _default_chunk_elems(device: torch.device) -> int:
    # CPU: blocks that stay near the caches; GPU: big blocks, few launches.
    return 1 << 25 if device.type == "cuda" else 1 << 18


# --- mutual likelihood score ------------------------------------------------------------------

def _mls_block(ma: Tensor, va: Tensor, mb: Tensor, vb: Tensor) -> Tensor:
    """``-1/2 mean_d[(ma - mb)^2 / s + log s]``, ``s = va + vb``; ma, va [r, 1, D], mb, vb [r|1, M, D]."""
    s = va + vb
    t = (ma - mb).square_().div_(s)
    return t.add_(s.log_()).mean(-1).mul_(-0.5)  # [r, M]


def _columns(mb: Tensor, vb: Tensor, index: Optional[Tensor], i: int, j: int) -> tuple[Tensor, Tensor]:
    if index is None:
        return mb.unsqueeze(0), vb.unsqueeze(0)  # [1, M, D], broadcast over rows
    idx = index[i:j]
    return mb[idx], vb[idx]  # [r, M, D]


class _MutualLikelihoodScore(torch.autograd.Function):
    """MLS of rows ``a`` against all rows of ``b`` (index None, -> [R, P]) or against
    ``b[index[r]]`` (-> [R, M]), in row chunks. Backward recomputes each chunk, so memory is
    O(chunk) in both passes instead of O(R * M * D) saved activations."""

    @staticmethod
    def forward(ctx, ma, va, mb, vb, index, rows):  # noqa: D102
        r = ma.shape[0]
        m = mb.shape[0] if index is None else index.shape[1]
        out = ma.new_empty(r, m)
        for i in range(0, r, rows):
            j = min(i + rows, r)
            cb, cv = _columns(mb, vb, index, i, j)
            out[i:j] = _mls_block(ma[i:j].unsqueeze(1), va[i:j].unsqueeze(1), cb, cv)
        ctx.save_for_backward(ma, va, mb, vb, index)
        ctx.rows = rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: D102
        ma, va, mb, vb, index = ctx.saved_tensors
        need_a = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        need_b = ctx.needs_input_grad[2] or ctx.needs_input_grad[3]
        d = ma.shape[1]
        g_ma = torch.zeros_like(ma) if need_a else None
        g_va = torch.zeros_like(va) if need_a else None
        g_mb = torch.zeros_like(mb) if need_b else None
        g_vb = torch.zeros_like(vb) if need_b else None
        g = grad.to(ma.dtype) / d  # d MLS / d x carries a 1/D from the mean
        for i in range(0, ma.shape[0], ctx.rows):
            j = min(i + ctx.rows, ma.shape[0])
            cb, cv = _columns(mb, vb, index, i, j)
            inv = (va[i:j].unsqueeze(1) + cv).reciprocal_()  # 1 / s       [r, M, D]
            t = (ma[i:j].unsqueeze(1) - cb).mul_(inv)  # (ma - mb) / s   [r, M, D]
            w = t.square().sub_(inv).mul_(0.5)  # d/ds of MLS * D = 1/2 (q/s^2 - 1/s)
            gi = g[i:j]
            if need_a:
                g_ma[i:j] = -torch.einsum("rm,rmd->rd", gi, t)
                g_va[i:j] = torch.einsum("rm,rmd->rd", gi, w)
            if need_b:
                if index is None:
                    g_mb += torch.einsum("rm,rmd->md", gi, t)
                    g_vb += torch.einsum("rm,rmd->md", gi, w)
                else:
                    flat = index[i:j].reshape(-1)
                    g_mb.index_add_(0, flat, (gi.unsqueeze(2) * t).reshape(-1, d))
                    g_vb.index_add_(0, flat, (gi.unsqueeze(2) * w).reshape(-1, d))
        return g_ma, g_va, g_mb, g_vb, None, None


def _mls(mu_a: Tensor, var_a: Tensor, mu_b: Tensor, var_b: Tensor, index: Optional[Tensor],
         chunk_elems: Optional[int]) -> Tensor:
    dt = torch.promote_types(compute_dtype(mu_a), compute_dtype(mu_b))
    with torch.autocast(mu_a.device.type, enabled=False):
        ma, mb = F.normalize(mu_a.to(dt), dim=-1), F.normalize(mu_b.to(dt), dim=-1)
        va, vb = var_a.to(dt), var_b.to(dt)
        cols = mb.shape[0] if index is None else index.shape[1]
        budget = chunk_elems or _default_chunk_elems(ma.device)
        rows = max(1, budget // max(1, cols * ma.shape[1]))
        return _MutualLikelihoodScore.apply(ma, va, mb, vb, index, rows)


def mutual_likelihood_score(mu_a: Tensor, var_a: Tensor, mu_b: Tensor, var_b: Tensor, *,
                            chunk_elems: Optional[int] = None) -> Tensor:
    """``MLS(i, j) = -1/2 mean_d[(m_i,d - m_j,d)^2 / (v_i,d + v_j,d) + log(v_i,d + v_j,d)]``,
    ``m = normalize(mu)`` (L2, eps 1e-12).

    ``1 / (v_i + v_j)`` couples both sides, so the square does not expand into matmuls exactly;
    the score is computed in row chunks of about ``chunk_elems`` elements (``[rows, N_b, D]``),
    and the backward recomputes each chunk (no ``[N_a, N_b, D]`` tensor is ever held).

    Args:
        mu_a, var_a: [N_a, D]; mu_b, var_b: [N_b, D]. Variances > 0. Computed in float32
            (float64 if either mu is float64), also under autocast.
        chunk_elems: working-set size per chunk (default 2^18 on CPU, 2^25 on CUDA).

    Returns:
        [N_a, N_b], differentiable with respect to all four inputs.
    """
    return _mls(mu_a, var_a, mu_b, var_b, None, chunk_elems)


def mutual_likelihood_score_indexed(mu_a: Tensor, var_a: Tensor, mu_b: Tensor, var_b: Tensor, index: Tensor,
                                    *, chunk_elems: Optional[int] = None) -> Tensor:
    """``out[r, j] = MLS(a_r, b_{index[r, j]})`` without materialising ``[R, M, D]`` for autograd.

    Args:
        mu_a, var_a: [R, D]. mu_b, var_b: [P, D] (a bank). index: [R, M] int64 in [0, P).

    Returns:
        [R, M]; differentiable w.r.t. all four (bank gradients by ``index_add_``).
    """
    return _mls(mu_a, var_a, mu_b, var_b, index, chunk_elems)
