"""PiCo's pixel contrast against the memory banks (:func:`memory_bank_contrast_loss`): the loss of
:func:`segproto.losses.pico.all_pairs_contrast_loss` over the written memory slots, computed without
``[N, F]`` label masks and with a closed-form gradient."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["memory_bank_contrast_loss"]


class _PrecomputedGrad(torch.autograd.Function):
    """A scalar whose gradient with respect to ``x`` was computed with its value (first order only)."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor):
        (grad,) = ctx.saved_tensors
        return g * grad, None, None


def _scratch(workspace: Optional[dict], name: str, shape: tuple[int, ...], like: Tensor,
             dtype: Optional[torch.dtype] = None) -> Tensor:
    """An uninitialised tensor of ``shape``; with a CPU ``workspace`` (a dict the caller keeps across
    calls), a view of a buffer kept there and grown when too small. Large fresh CPU allocations are
    mmap'ed and zero-filled page by page by the OS at first touch (a 700 MB logit matrix: ~0.1 s per
    step); GPUs have PyTorch's caching allocator instead, so there the workspace is not used."""
    dtype = dtype or like.dtype
    if workspace is None or like.device.type != "cpu":
        return like.new_empty(shape, dtype=dtype)
    numel = math.prod(shape)
    buf = workspace.get(name)
    if buf is None or buf.dtype != dtype or buf.numel() < numel:
        buf = workspace[name] = like.new_empty((numel,), dtype=dtype)
    return buf[:numel].view(shape)


def _filled_rows(banks: list[Tensor], cnt: Tensor, sizes: list[int], dtype: torch.dtype,
                 workspace: Optional[dict] = None) -> Tensor:
    """The written slots of every bank as one ``[F, D]`` copy: bank by bank, class-major within a
    bank (``bank[c, :cnt[b, c]]`` for c = 0..K-1). ``sizes[b] = cnt[b].sum()`` (known on the host)."""
    k, d = banks[0].shape[0], banks[0].shape[2]
    rows = _scratch(workspace, "rows", (sum(sizes), d), banks[0])
    start = 0
    for bank, c, size in zip(banks, cnt, sizes):
        m = bank.shape[1]
        first = torch.cumsum(c, 0) - c  # row of (c, slot 0) in the copy
        base = torch.arange(k, device=c.device) * m - first  # flat slot = c * m + (row - first[c])
        slot = torch.arange(size, device=c.device) + torch.repeat_interleave(base, c, output_size=size)
        torch.index_select(bank.reshape(-1, d), 0, slot, out=rows[start:start + size])
        start += size
    return rows.to(dtype)

def _positive_slots(off: Tensor, pos_per_bank: Tensor, y_safe: Tensor, keep: Tensor,
                    most_per_class: list[int]) -> tuple[Tensor, Tensor]:
    """Row indices ``[N, P]`` of every anchor's positives in the class-major row copy, bank after
    bank, and which of them are real (``valid``). Padding entries repeat a positive of the same
    anchor (any real one), so gathering them is harmless and ``valid`` masks them out.

    ``off [nb, K]``: first row of each (bank, class); ``pos_per_bank [nb, N]``: positives of each
    anchor per bank; ``most_per_class[b]``: the most rows of one class in bank b (P = their sum)."""
    dev = off.device
    first = off[0, y_safe]  # padding of the positive index: a positive of the same anchor
    for b in range(off.shape[0] - 1, -1, -1):
        first = torch.where(pos_per_bank[b] > 0, off[b, y_safe], first)
    first = (first * keep).unsqueeze(1)
    idx, valid = [], []
    for b in range(off.shape[0]):
        ar = torch.arange(most_per_class[b], device=dev)  # [P_b]: at most this many positives in bank b
        ok = ar < pos_per_bank[b].unsqueeze(1)  # [N, P_b]
        idx.append(torch.where(ok, off[b, y_safe].unsqueeze(1) + ar, first))
        valid.append(ok)
    return torch.cat(idx, 1), torch.cat(valid, 1)


def _closed_form_grad(e: Tensor, x: Tensor, neg_sum: Tensor, idx: Tensor, w: Tensor, rows: Tensor,
                      temperature: float) -> Tensor:
    """d loss / d anchors ``[N, D]`` from the forward pass's pieces (``e [N, F]`` is overwritten):
    ``e_ij * g_i / sum_j e_ij`` on negatives with ``g_i = w_i sum_{j in P(i)} sigmoid(x_ij)``,
    ``-w_i sigmoid(x_ij)`` on positives, both through ``rows / T``."""
    # d softplus(x) / dx as autograd's softplus_backward (threshold 20: exactly 1 above); 0 on padding
    sig = torch.sigmoid(x).masked_fill_(x > 20.0, 1.0)  # [N, P]
    coef = w * sig.sum(1, keepdim=True) / torch.where(neg_sum > 0, neg_sum, torch.ones_like(neg_sum))
    gs = e.mul_(coef)  # d L / d s_ij on negatives (0 on positives)
    gs.scatter_add_(1, idx, sig.mul_(-w))  # positives (padding adds 0)
    return (gs @ rows) / temperature  # [N, D]


def memory_bank_contrast_loss(anchors: Tensor, anchor_labels: Tensor, banks: list[Tensor], counts: list[Tensor],
                         temperature: float = 0.1, base_temperature: float = 0.07,
                         ignore_index: int = 255, workspace: Optional[dict] = None) -> Tensor:
    """:func:`all_pairs_contrast_loss` against the written slots of per-class memories, without masks.

    The value is ``all_pairs_contrast_loss(anchors, anchor_labels, rows, row_labels, temperature,
    base_temperature, ignore_index=ignore_index)`` where ``rows`` / ``row_labels`` are the written
    slots ``bank[c, :count[c]]`` (label c) of every bank; the memory rows are constants (no
    gradient). Tested against that function and a float64 loop.

    How: the written rows are copied class-major, so the positives of anchor i are the contiguous
    rows of class ``y_i`` in each bank; they are gathered into ``[N, P]`` (P = the most positives of
    any anchor) and everything else is a negative. With the positives set to ``-inf`` in place,
    ``m_i`` = the largest negative logit and ``e_ij = exp(s_ij - m_i)``, the negative sum is a plain
    row sum (``>= 1``: no overflow, no underflow, as the masked logsumexp) and
    ``lse_N(i) = m_i + log(sum_j e_ij)``. No ``[N, F]`` label masks, no masked logsumexp; the softplus
    runs on the ``[N, P]`` positives only. The gradient with respect to the anchors is formed in
    the same pass, in closed form (``e_ij * g_i / sum_j e_ij`` on negatives with
    ``g_i = w_i sum_{j in P(i)} sigmoid(lse_N(i) - s_ij)``, ``-w_i sigmoid(lse_N(i) - s_ij)`` on
    positives, ``w_i = (T / T_base) / (|P(i)| * #anchors with positives)``), so autograd keeps no
    ``[N, F]`` intermediate (first-order gradients only).

    Args:
        anchors: [N, D] embeddings (computed in float32, or float64 for float64 input).
        anchor_labels: [N] int64.
        banks: per memory, ``[K, M_b, D]`` rows (class-major ring buffers, same K and D).
        counts: per memory, ``[K]`` int64 written slots per class (slots ``>= count`` never read).
        temperature, base_temperature, ignore_index: as :func:`all_pairs_contrast_loss` (memory rows of
            class ``ignore_index``, if any, take no part).
        workspace: optional dict kept by the caller across calls: on the CPU the ``[N, F]`` logits
            and the ``[F, D]`` row copy reuse buffers kept there (same results, no page faults).

    Returns:
        Scalar loss; 0 with a gradient path when no anchor has a positive (e.g. empty memories).
    """
    a = anchors if anchors.dtype == torch.float64 else anchors.float()
    dev, dt = a.device, a.dtype
    k, nb, n = banks[0].shape[0], len(banks), a.shape[0]
    cnt = torch.stack(counts)  # [nb, K]
    if 0 <= ignore_index < k:  # rows labelled ignore_index are neither positives nor negatives: drop them
        cnt = cnt.masked_fill(torch.arange(k, device=dev) == ignore_index, 0)
    host = cnt.tolist()  # the one host sync: every shape below follows from the counts
    sizes, most_per_class = [sum(r) for r in host], [max(r) for r in host]  # rows per bank, most rows of a class
    f = sum(sizes)
    rows = _filled_rows(banks, cnt, sizes, dt, workspace)  # [F, D]
    need_grad = a.requires_grad and torch.is_grad_enabled()
    ratio = temperature / base_temperature
    grad = None
    with torch.no_grad(), torch.autocast(dev.type, enabled=False):
        y = anchor_labels
        y_ok = (y >= 0) & (y < k) & (y != ignore_index)
        y_safe = torch.where(y_ok, y, torch.zeros_like(y))
        off = (torch.cumsum(cnt.reshape(-1), 0) - cnt.reshape(-1)).reshape(nb, k)  # first row of each (bank, class)
        pos_per_bank = cnt[:, y_safe] * y_ok  # [nb, N] positives of each anchor in each bank
        n_pos = pos_per_bank.sum(0)  # [N]
        keep = n_pos > 0
        n_keep = keep.sum()
        if f == 0 or n == 0:  # no anchor has a positive
            value, grad = ratio * a.new_zeros(()), torch.zeros_like(a) if need_grad else None
        else:
            sim = torch.mm(a / temperature, rows.t(), out=_scratch(workspace, "sim", (n, f), a))  # [N, F] logits
            idx, valid = _positive_slots(off, pos_per_bank, y_safe, keep, most_per_class)  # [N, P]
            pos = sim.gather(1, idx)  # [N, P] positive logits (padding: a repeated positive)
            sim.scatter_add_(1, idx, torch.full_like(pos, float("-inf")))  # positives out of the negative sum
            shift = sim.amax(1, keepdim=True)  # [N, 1] the largest negative logit (-inf: no negative)
            shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
            e = sim.sub_(shift).exp_()  # [N, F] exp(s_ij - shift_i): 0 on positives, <= 1, max 1 on negatives
            neg_sum = e.sum(1, keepdim=True)  # [N, 1], >= 1 with a negative (no underflow), 0 without
            neg_lse = shift + neg_sum.log()  # [N, 1]; -inf without negatives
            x = (neg_lse - pos).masked_fill_(~valid, float("-inf"))  # [N, P]; padding -> 0 below
            per_anchor = F.softplus(x).sum(1) / n_pos.clamp(min=1)
            value = ratio * (per_anchor * keep).sum() / n_keep.clamp(min=1)
            if need_grad:
                w = (ratio / (n_pos.clamp(min=1) * n_keep.clamp(min=1)).to(dt) * keep).unsqueeze(1)  # [N, 1]
                grad = _closed_form_grad(e, x, neg_sum, idx, w, rows, temperature)
    if grad is None:
        return value
    return _PrecomputedGrad.apply(a, value, grad)
