"""PiCo pixel contrast as pure functions: the loss, hard-example selection, negative synthesis and
segmentation-aware anchor sampling (formulas: ``docs/methods/pico.md``).

Everything here is stateless and vectorised (masks, ``logsumexp``, ``topk``, sorts); the memories
and the schedule live in :class:`segproto.methods.pico.PiCoMethod`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from segproto import ops

__all__ = [
    "AnchorSample",
    "Synthesized",
    "contrast_from_logits",
    "masked_logsumexp",
    "memory_contrast_loss",
    "pico_contrast_loss",
    "pixel_contrast_loss",
    "sample_hard_anchors",
    "select_examples",
    "similarity_and_masks",
    "synthesize_negatives",
]

SAMPLING_MODES = ("all", "random", "hardest", "semi_hard")


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """``a [N, D]`` against ``b [M, D]`` (-> [N, M]) or per anchor ``b [N, E, D]`` (-> [N, E]), in
    ``a``'s dtype even under autocast (which would otherwise run the matmul in 16 bits)."""
    with torch.autocast(a.device.type, enabled=False):
        b = b.to(a.dtype)
        return a @ b.t() if b.dim() == 2 else torch.einsum("nd,ned->ne", a, b)


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """``log sum_{mask} exp(x)`` along ``dim``; ``-inf`` where a row has no entry.

    The gradient is NaN-free: rows without entries get a zero gradient (a plain ``logsumexp`` of
    an all ``-inf`` row back-propagates ``exp(-inf - -inf) = NaN``).

    Args:
        x: [..., M] float. mask: [..., M] bool, same shape.

    Returns:
        x's shape without ``dim``.
    """
    has = mask.any(dim, keepdim=True)
    safe = torch.where(has, x.masked_fill(~mask, float("-inf")), torch.zeros_like(x))
    return torch.logsumexp(safe, dim).masked_fill(~has.squeeze(dim), float("-inf"))


def contrast_from_logits(pos_logits: Tensor, pos_mask: Tensor, neg_logits: Tensor, neg_mask: Tensor,
                         temperature: float, base_temperature: float,
                         extra_logits: Optional[Tensor] = None, extra_mask: Optional[Tensor] = None) -> Tensor:
    """The PiCo loss from per-anchor logits ``s = f_i . f_j / T`` (already divided by T).

    ``l_ij = s_ij - log(exp(s_ij) + sum_{k in N(i)} exp(s_ik)) = -softplus(lse_N(i) - s_ij)``;
    ``L = -(T / T_base) * mean_{i: |P(i)| > 0} [(1/|P(i)|) sum_{j in P(i)} l_ij]``.

    Args:
        pos_logits: [N, P], pos_mask: [N, P] bool (which columns are positives of anchor i).
        neg_logits: [N, Q], neg_mask: [N, Q] bool. May be the same tensor as ``pos_logits``.
        temperature, base_temperature: T and T_base (only their ratio is used here).
        extra_logits, extra_mask: optional [N, E] more negatives (e.g. synthesized ones).

    Returns:
        Scalar. 0 (with a gradient path) when no anchor has a positive.
    """
    neg_lse = masked_logsumexp(neg_logits, neg_mask)  # [N]
    if extra_logits is not None:
        extra_mask = torch.ones_like(extra_logits, dtype=torch.bool) if extra_mask is None else extra_mask
        parts = torch.stack([neg_lse, masked_logsumexp(extra_logits, extra_mask)], 1)  # [N, 2]
        neg_lse = masked_logsumexp(parts, torch.isfinite(parts))
    log_prob = -F.softplus(neg_lse.unsqueeze(1) - pos_logits)  # [N, P], l_ij
    n_pos = pos_mask.sum(1)  # [N]
    per_anchor = torch.where(pos_mask, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp(min=1)
    keep = (n_pos > 0).to(per_anchor.dtype)
    mean = (per_anchor * keep).sum() / keep.sum().clamp(min=1)
    return -(temperature / base_temperature) * mean


def similarity_and_masks(anchors: Tensor, anchor_labels: Tensor, contrast: Optional[Tensor] = None,
                         contrast_labels: Optional[Tensor] = None, temperature: float = 0.1,
                         ignore_index: int = 255) -> tuple[Tensor, Tensor, Tensor]:
    """Logits ``s = anchors @ contrast^T / T`` and the positive / negative masks.

    With ``contrast=None`` the anchors are the contrast set and the diagonal (self) is excluded.
    Rows labelled ``ignore_index`` are neither positives nor negatives (ignored anchors have none).

    Args:
        anchors: [N, D] (computed in float32, or float64 for float64 input).
        anchor_labels: [N] int64. contrast: [M, D] or None. contrast_labels: [M] int64.

    Returns:
        (sim [N, M], pos [N, M] bool, neg [N, M] bool).
    """
    a = anchors if anchors.dtype == torch.float64 else anchors.float()
    if contrast is None:
        c, c_labels = a, anchor_labels
    else:
        if contrast_labels is None:
            raise ValueError("pixel contrast: `contrast` needs `contrast_labels`")
        c, c_labels = contrast, contrast_labels
    sim = _dot(a, c) / temperature  # [N, M]
    valid = (anchor_labels != ignore_index).unsqueeze(1) & (c_labels != ignore_index).unsqueeze(0)
    same = anchor_labels.unsqueeze(1) == c_labels.unsqueeze(0)  # [N, M]
    pos, neg = same & valid, ~same & valid
    if contrast is None:
        pos.fill_diagonal_(False)
    return sim, pos, neg


def pixel_contrast_loss(anchors: Tensor, anchor_labels: Tensor, contrast: Optional[Tensor] = None,
                        contrast_labels: Optional[Tensor] = None, temperature: float = 0.1,
                        base_temperature: float = 0.07, *, extra_negatives: Optional[Tensor] = None,
                        extra_negatives_mask: Optional[Tensor] = None, ignore_index: int = 255) -> Tensor:
    """PiCo pixel contrast loss (every positive and negative of the contrast set is used).

    Args:
        anchors: [N, D] unit-norm embeddings f_i. anchor_labels: [N] int64.
        contrast: [M, D] contrast rows (e.g. memory), or None = the anchors with self excluded.
        contrast_labels: [M] int64 (required with ``contrast``).
        temperature: T. base_temperature: T_base.
        extra_negatives: optional [E, D] (shared) or [N, E, D] (per anchor) more negatives of every
            anchor, e.g. from :func:`synthesize_negatives`; extra_negatives_mask: [N, E] bool.
        ignore_index: label of rows that take no part.

    Returns:
        Scalar loss; 0 with a gradient path when no anchor has a positive.
    """
    sim, pos, neg = similarity_and_masks(anchors, anchor_labels, contrast, contrast_labels, temperature,
                                         ignore_index)
    extra = None
    if extra_negatives is not None:
        extra = _dot(anchors.to(sim.dtype), extra_negatives) / temperature  # [N, E]
    return contrast_from_logits(sim, pos, sim, neg, temperature, base_temperature, extra, extra_negatives_mask)


def select_examples(sim: Tensor, mask: Tensor, k: int, mode: str, hardest_is_largest: bool = True,
                    pool_frac: float = 0.1, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Per anchor, ``k`` columns among those where ``mask``.

    Modes: ``"hardest"``: the k hardest (largest ``sim`` for negatives, ``hardest_is_largest=True``;
    smallest for positives); ``"semi_hard"``: k uniformly at random, without replacement, from the
    hardest ``max(k, ceil(pool_frac * n_i))`` (the hardest 10%, at least k); ``"random"``: k
    uniformly at random.

    Args:
        sim: [N, M] similarities. mask: [N, M] bool. k: columns per anchor.

    Returns:
        (idx [N, min(k, M)] int64 column indices, valid [N, min(k, M)] bool: False where anchor i
        has fewer than k candidates).
    """
    n, m = sim.shape
    k = min(k, m)
    n_avail = mask.sum(1, keepdim=True)  # [N, 1]
    if mode == "random":
        score = torch.rand(sim.shape, generator=generator, device=sim.device, dtype=torch.float32)
    elif mode in ("hardest", "semi_hard"):
        score = sim.detach() if hardest_is_largest else -sim.detach()
    else:
        raise ValueError(f"select_examples: mode must be 'random', 'hardest' or 'semi_hard', got {mode!r}")
    score = score.masked_fill(~mask, float("-inf"))
    if mode != "semi_hard":
        idx = score.topk(k, dim=1).indices  # valid candidates (finite scores) come first
        return idx, torch.arange(k, device=sim.device) < n_avail
    pool = torch.ceil(n_avail * pool_frac).long().clamp(min=k).minimum(n_avail)  # [N, 1]
    p_max = min(m, max(k, math.ceil(m * pool_frac)))
    top = score.topk(p_max, dim=1).indices  # [N, p_max], hardest first
    keys = torch.rand((n, p_max), generator=generator, device=sim.device)
    keys = keys.masked_fill(torch.arange(p_max, device=sim.device) >= pool, -1.0)
    pick = keys.topk(k, dim=1).indices  # k random positions inside each anchor's pool
    return top.gather(1, pick), pick < pool


class Synthesized(NamedTuple):
    """Synthesized hard negatives (unit norm, detached)."""

    feats: Tensor  # [N, E, D]
    mask: Tensor  # [N, E] bool: False where the anchor had no hard negative
    alpha: Tensor  # [N, E_anchor] anchor weights of the negative-anchor mixes (all < alpha_max)


def synthesize_negatives(anchors: Tensor, contrast: Tensor, hard_idx: Tensor, hard_valid: Tensor,
                         num_neg_neg: int, num_neg_anchor: int, alpha_max: float = 0.5,
                         generator: Optional[torch.Generator] = None) -> Synthesized:
    """Hard negative synthesis (negative-negative and negative-anchor mixing), under no_grad.

    For anchor i with hard negatives ``n_1..n_K`` (``contrast[hard_idx[i]]`` where ``hard_valid``):
    negative-negative: ``normalize(b * n_p + (1 - b) * n_q)``, p, q uniform, ``b ~ U(0, 1)``;
    negative-anchor: ``normalize(a * f_i + (1 - a) * n_p)``, ``a ~ U(0, alpha_max)`` (< 0.5).

    Args:
        anchors: [N, D]. contrast: [M, D]. hard_idx, hard_valid: [N, K] from
            :func:`select_examples` (mode ``"hardest"`` on the negatives).
        num_neg_neg, num_neg_anchor: how many of each kind per anchor.
        alpha_max: upper bound of a, in (0, 0.5].

    Returns:
        :class:`Synthesized` with E = num_neg_neg + num_neg_anchor.
    """
    with torch.no_grad():
        a, c = anchors.detach(), contrast.detach().to(anchors.dtype)
        n, dev = a.shape[0], a.device
        n_valid = hard_valid.sum(1, keepdim=True)  # [N, 1]
        order = torch.argsort((~hard_valid).to(torch.uint8), dim=1, stable=True)  # valid columns first

        def draw(e: int) -> Tensor:  # [N, e] random hard negatives (contrast rows)
            u = torch.rand((n, e), generator=generator, device=dev)
            pos = (u * n_valid).long().clamp(max=max(hard_idx.shape[1] - 1, 0))
            return c[hard_idx.gather(1, order.gather(1, pos))] if hard_idx.shape[1] else a.new_zeros(n, e, a.shape[1])

        beta = torch.rand((n, num_neg_neg, 1), generator=generator, device=dev, dtype=a.dtype)
        nn_mix = beta * draw(num_neg_neg) + (1 - beta) * draw(num_neg_neg)  # [N, E1, D]
        alpha = torch.rand((n, num_neg_anchor), generator=generator, device=dev, dtype=a.dtype) * alpha_max
        na_mix = alpha.unsqueeze(2) * a.unsqueeze(1) + (1 - alpha.unsqueeze(2)) * draw(num_neg_anchor)
        feats = F.normalize(torch.cat([nn_mix, na_mix], 1), dim=2)  # [N, E, D]
        mask = (n_valid > 0).expand(n, num_neg_neg + num_neg_anchor)
    return Synthesized(feats, mask, alpha)


def pico_contrast_loss(anchors: Tensor, anchor_labels: Tensor, contrast: Optional[Tensor] = None,
                       contrast_labels: Optional[Tensor] = None, *, temperature: float = 0.1,
                       base_temperature: float = 0.07, sampling: str = "all", hard_k: int = 512,
                       semi_hard_frac: float = 0.1, synth_neg_neg: int = 0, synth_neg_anchor: int = 0,
                       alpha_max: float = 0.5, generator: Optional[torch.Generator] = None,
                       ignore_index: int = 255) -> Tensor:
    """:func:`pixel_contrast_loss` with the paper's example sampling and negative synthesis.

    ``sampling="all"`` uses every positive and negative (= :func:`pixel_contrast_loss`); otherwise
    each anchor keeps ``hard_k`` positives and ``hard_k`` negatives chosen by
    :func:`select_examples`. With ``synth_neg_neg``/``synth_neg_anchor`` > 0, negatives mixed from
    each anchor's ``hard_k`` hardest negatives are appended (:func:`synthesize_negatives`).

    Returns:
        Scalar loss.
    """
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"pico_contrast_loss: sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    sim, pos, neg = similarity_and_masks(anchors, anchor_labels, contrast, contrast_labels, temperature,
                                         ignore_index)
    if sampling == "all":
        pos_l, pos_m, neg_l, neg_m = sim, pos, sim, neg
    else:
        pi, pos_m = select_examples(sim, pos, hard_k, sampling, False, semi_hard_frac, generator)
        ni, neg_m = select_examples(sim, neg, hard_k, sampling, True, semi_hard_frac, generator)
        pos_l, neg_l = sim.gather(1, pi), sim.gather(1, ni)  # [N, k]
    extra = extra_mask = None
    if synth_neg_neg + synth_neg_anchor > 0:
        a = anchors.to(sim.dtype)
        c = a if contrast is None else contrast
        hi, hv = ((ni, neg_m) if sampling == "hardest"
                  else select_examples(sim, neg, hard_k, "hardest", True, generator=generator))
        syn = synthesize_negatives(a, c, hi, hv, synth_neg_neg, synth_neg_anchor, alpha_max, generator)
        extra, extra_mask = _dot(a, syn.feats) / temperature, syn.mask
    return contrast_from_logits(pos_l, pos_m, neg_l, neg_m, temperature, base_temperature, extra, extra_mask)


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


def memory_contrast_loss(anchors: Tensor, anchor_labels: Tensor, banks: list[Tensor], counts: list[Tensor],
                         temperature: float = 0.1, base_temperature: float = 0.07,
                         ignore_index: int = 255, workspace: Optional[dict] = None) -> Tensor:
    """:func:`pixel_contrast_loss` against the written slots of per-class memories, without masks.

    The value is ``pixel_contrast_loss(anchors, anchor_labels, rows, row_labels, temperature,
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
        temperature, base_temperature, ignore_index: as :func:`pixel_contrast_loss` (memory rows of
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
    sizes, p_b = [sum(r) for r in host], [max(r) for r in host]  # rows per bank, most rows of a class
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
        cnt_y = cnt[:, y_safe] * y_ok  # [nb, N] positives of each anchor in each bank
        n_pos = cnt_y.sum(0)  # [N]
        keep = n_pos > 0
        n_keep = keep.sum()
        if f == 0 or n == 0:  # no anchor has a positive
            value, grad = ratio * a.new_zeros(()), torch.zeros_like(a) if need_grad else None
        else:
            sim = torch.mm(a / temperature, rows.t(), out=_scratch(workspace, "sim", (n, f), a))  # [N, F] logits
            first = off[0, y_safe]  # padding of the positive index: a positive of the same anchor
            for b in range(nb - 1, -1, -1):
                first = torch.where(cnt_y[b] > 0, off[b, y_safe], first)
            first = (first * keep).unsqueeze(1)
            idx, valid = [], []
            for b in range(nb):
                ar = torch.arange(p_b[b], device=dev)  # [P_b]: at most this many positives in bank b
                ok = ar < cnt_y[b].unsqueeze(1)  # [N, P_b]
                idx.append(torch.where(ok, off[b, y_safe].unsqueeze(1) + ar, first))
                valid.append(ok)
            idx, valid = torch.cat(idx, 1), torch.cat(valid, 1)  # [N, P]
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
                # d softplus(x) / dx as autograd's softplus_backward (threshold 20: exactly 1 above); 0 on padding
                sig = torch.sigmoid(x).masked_fill_(x > 20.0, 1.0)  # [N, P]
                coef = w * sig.sum(1, keepdim=True) / torch.where(neg_sum > 0, neg_sum, torch.ones_like(neg_sum))
                gs = e.mul_(coef)  # d L / d s_ij on negatives (0 on positives)
                gs.scatter_add_(1, idx, sig.mul_(-w))  # positives (padding adds 0)
                grad = (gs @ rows) / temperature  # [N, D]
    if grad is None:
        return value
    return _PrecomputedGrad.apply(a, value, grad)


class AnchorSample(NamedTuple):
    """Anchors drawn by :func:`sample_hard_anchors`, sorted by (image, class), easy before hard."""

    feats: Tensor  # [S, D]
    labels: Tensor  # [S] int64
    image: Tensor  # [S] int64
    pixel: Tensor  # [S] int64 (flat index in the embedding map)
    hard: Tensor  # [S] bool: labelled c but predicted otherwise
    hard_frac: Tensor  # scalar float: hard.mean() (0 when S = 0)


def sample_hard_anchors(emb: Tensor, labels: Tensor, preds: Tensor, num_classes: int, max_samples: int,
                        max_views: int, ignore_index: int = 255, generator: Optional[torch.Generator] = None,
                        fixed_shape: Optional[bool] = None) -> AnchorSample:
    """Segmentation-aware hard anchor sampling, vectorised (no loop over images or classes).

    Every (image b, class c) with more than ``max_views`` labelled pixels takes part; with A such
    pairs, each gives ``n_view = min(max_samples // A, max_views)`` distinct pixels: half hard
    (labelled c, predicted otherwise) and half easy (labelled and predicted c), the kind that runs
    short filled up from the other. Uniform within each kind, fully determined by ``generator``.

    Args:
        emb: [B, N, D] embeddings (N = h * w). labels, preds: [B, N] int64 at the same resolution.
        num_classes: K. max_samples, max_views: as above. ignore_index: unlabelled pixels.
        generator: on ``emb.device``.
        fixed_shape: return exactly ``max_samples`` rows: the ``A * n_view`` anchors first, then
            padding rows labelled ``ignore_index`` (every PiCo loss leaves those out), so no shape
            depends on the labels and the only host sync is the label check. Default: True on
            every device but the CPU (where a sync costs nothing and padding would cost loss compute).

    Returns:
        :class:`AnchorSample` sorted by (image, class), easy before hard (padding last);
        ``hard_frac`` is over the drawn anchors.
    """
    b, n, _ = emb.shape
    dev, k = emb.device, num_classes
    fixed = dev.type != "cpu" if fixed_shape is None else fixed_shape
    flat = labels.reshape(-1)
    valid = flat != ignore_index
    bad = valid & ((flat < 0) | (flat >= k))
    if bool(bad.any()):
        raise ValueError(f"sample_hard_anchors: label {int(flat[bad][0])} is outside [0, {k}) "
                         f"and is not ignore_index ({ignore_index})")
    # random order within a group = ascending (key, pixel); on the CPU the keys are the draws of
    # earlier releases (seeded CPU runs unchanged), elsewhere drawn without a host sync
    keys = ops.uniform_pixel_keys(labels, ignore_index, generator).reshape(-1)
    pair = torch.where(valid, torch.arange(b * n, device=dev) // n * k + flat, b * k)  # b * k: ignored
    hard = valid & (preds.reshape(-1) != flat)
    group = 2 * pair + hard.long()  # 2 * b * k: ignored pixels
    order = torch.sort(keys, stable=True)[1]
    g, by_group = torch.sort(group[order], stable=True)
    order = order[by_group]  # by group, random within a group
    # group sizes by a search in the sorted groups (bincount would read the device twice on a GPU)
    first = torch.searchsorted(g, torch.arange(2 * b * k + 2, device=dev))  # [2 * B * K + 2]
    size = first[1:] - first[:-1]  # [2 * B * K + 1]
    n_hard = size[1:2 * b * k:2]
    n_pair = size[0:2 * b * k:2] + n_hard
    eligible = n_pair > max_views
    n_eligible = eligible.sum()
    n_view = torch.where(n_eligible > 0, (max_samples // n_eligible.clamp(min=1)).clamp(max=max_views), 0)
    keep_hard = torch.minimum(n_hard, torch.clamp(n_view - (n_pair - n_hard), min=n_view // 2))
    keep_hard = torch.where(eligible, keep_hard, 0)
    keep_easy = torch.where(eligible, n_view - keep_hard, 0)
    quota = torch.stack([keep_easy, keep_hard], 1).reshape(-1)  # [2 * B * K], group = 2 * pair + hard
    quota = torch.cat([quota, quota.new_zeros(1)])  # the ignored pixels' group takes nothing
    rank = torch.arange(b * n, device=dev) - first[g]
    drawn = rank < quota[g]
    if fixed:
        # eligible pair j (in (image, class) order) owns slots [j * n_view, (j + 1) * n_view), easy first
        p = torch.div(g, 2, rounding_mode="floor").clamp(max=b * k - 1)
        start = (torch.cumsum(eligible.long(), 0) - 1) * n_view
        slot = start[p] + (g % 2) * keep_easy[p] + rank
        out = torch.full((max_samples + 1,), -1, dtype=torch.long, device=dev)
        out.scatter_(0, torch.where(drawn, slot, max_samples), order)  # slot max_samples: the rest
        idx = out[:-1]
        filled = idx >= 0
        idx = idx.clamp(min=0)
        lab = torch.where(filled, flat[idx], ignore_index)
        is_hard = hard[idx] & filled
        frac = is_hard.sum() / filled.sum().clamp(min=1)
    else:
        idx = order[drawn]
        lab, is_hard = flat[idx], hard[idx]
        frac = is_hard.float().mean() if is_hard.numel() else emb.new_zeros((), dtype=torch.float32)
    image, pixel = torch.div(idx, n, rounding_mode="floor"), idx % n
    return AnchorSample(emb[image, pixel], lab, image, pixel, is_hard, frac.float())

