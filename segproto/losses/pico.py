"""PiCo pixel contrast as pure functions: the batch loss, hard-example selection and negative
synthesis here; the memory-bank loss in :mod:`.pico_memory` and the anchor sampling in
:mod:`.pico_anchors`, both exported from here too (formulas: ``docs/methods/pico.md``).

Everything here is stateless and vectorised (masks, ``logsumexp``, ``topk``, sorts); the memories
and the schedule live in :class:`segproto.methods.pico.PiCoMethod`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .pico_anchors import AnchorSample, sample_hard_anchors
from .pico_memory import memory_bank_contrast_loss

__all__ = [
    "AnchorSample",
    "Synthesized",
    "contrast_loss_from_logits",
    "masked_logsumexp",
    "memory_bank_contrast_loss",
    "sampled_contrast_loss",
    "all_pairs_contrast_loss",
    "sample_hard_anchors",
    "hardest_by_class",
    "select_examples",
    "similarity_and_masks",
    "synthesize_negatives",
]

SAMPLING_MODES = ("all", "random", "hardest", "semi_hard")


def _full_precision_dot(a: Tensor, b: Tensor) -> Tensor:
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


def contrast_loss_from_logits(pos_logits: Tensor, pos_mask: Tensor, neg_logits: Tensor, neg_mask: Tensor,
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


def _logits(anchors: Tensor, anchor_labels: Tensor, contrast: Optional[Tensor], contrast_labels: Optional[Tensor],
            temperature: float) -> tuple[Tensor, Tensor]:
    """``(anchors @ contrast^T / T [N, M], contrast labels [M])``; the anchors themselves without
    ``contrast``. In float32, or float64 for float64 anchors."""
    a = anchors if anchors.dtype == torch.float64 else anchors.float()
    if contrast is None:
        return _full_precision_dot(a, a) / temperature, anchor_labels
    if contrast_labels is None:
        raise ValueError("pixel contrast: `contrast` needs `contrast_labels`")
    return _full_precision_dot(a, contrast) / temperature, contrast_labels


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
    sim, c_labels = _logits(anchors, anchor_labels, contrast, contrast_labels, temperature)
    valid = (anchor_labels != ignore_index).unsqueeze(1) & (c_labels != ignore_index).unsqueeze(0)
    same = anchor_labels.unsqueeze(1) == c_labels.unsqueeze(0)  # [N, M]
    pos, neg = same & valid, ~same & valid
    if contrast is None:
        pos.fill_diagonal_(False)
    return sim, pos, neg


def all_pairs_contrast_loss(anchors: Tensor, anchor_labels: Tensor, contrast: Optional[Tensor] = None,
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
        extra = _full_precision_dot(anchors.to(sim.dtype), extra_negatives) / temperature  # [N, E]
    return contrast_loss_from_logits(sim, pos, sim, neg, temperature, base_temperature, extra, extra_negatives_mask)


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


def hardest_by_class(sim: Tensor, anchor_labels: Tensor, contrast_labels: Tensor, k: int,
                     ignore_index: int = 255) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`select_examples` ``"hardest"`` for the positives and for the negatives of a labelled
    contrast set, without ``[N, M]`` masks.

    The contrast columns are grouped by label once; per anchor class, the positives are ranked
    within the class's own columns only (``n_c x P_c`` instead of ``N x M``) and the negatives over
    one copy of the class's rows with its own and the ignored columns set to ``-inf``. The same
    columns as :func:`select_examples` on the masks of :func:`similarity_and_masks` (the order of
    exactly equal similarities aside), with a loop over the anchor classes that waits for the
    device, so :func:`sampled_contrast_loss` uses it on the CPU only.

    Args:
        sim: [N, M] similarities. anchor_labels: [N] int64. contrast_labels: [M] int64.
        k: columns per anchor. ignore_index: rows and columns with this label take no part.

    Returns:
        (positive idx, positive valid, negative idx, negative valid), each [N, min(k, M)]; the
        positives are the k least similar columns of the anchor's class, the negatives the k most
        similar of the other classes; ``valid`` is False past an anchor's number of candidates.
    """
    n, m = sim.shape
    k = min(k, m)
    score, dev = sim.detach(), sim.device
    order = torch.argsort(contrast_labels, stable=True)
    classes, counts = torch.unique_consecutive(contrast_labels[order], return_counts=True)
    ends = counts.cumsum(0)
    segment = dict(zip(classes.tolist(), zip((ends - counts).tolist(), ends.tolist())))
    ignored = order[slice(*segment.get(ignore_index, (0, 0)))]  # [I] columns that are nobody's negative
    pos_idx = torch.zeros(n, k, dtype=torch.long, device=dev)
    pos_ok = torch.zeros(n, k, dtype=torch.bool, device=dev)
    neg_idx, neg_ok = torch.zeros_like(pos_idx), torch.zeros_like(pos_ok)
    for c in torch.unique(anchor_labels).tolist():
        if c == ignore_index:
            continue
        rows = (anchor_labels == c).nonzero().squeeze(1)
        start, end = segment.get(c, (0, 0))
        cols = order[start:end]  # [P_c] this class's columns
        sub = score.index_select(0, rows)  # [n_c, M]
        if end > start:
            kp = min(k, end - start)
            pos_idx[rows, :kp] = cols[(-sub.index_select(1, cols)).topk(kp, dim=1).indices]
            pos_ok[rows, :kp] = True
        sub[:, cols] = float("-inf")
        sub[:, ignored] = float("-inf")
        neg_idx[rows] = sub.topk(k, dim=1).indices  # finite (valid) columns come first
        neg_ok[rows] = torch.arange(k, device=dev) < m - (end - start) - ignored.numel()
    return pos_idx, pos_ok, neg_idx, neg_ok


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


def sampled_contrast_loss(anchors: Tensor, anchor_labels: Tensor, contrast: Optional[Tensor] = None,
                       contrast_labels: Optional[Tensor] = None, *, temperature: float = 0.1,
                       base_temperature: float = 0.07, sampling: str = "all", hard_k: int = 512,
                       semi_hard_frac: float = 0.1, synth_neg_neg: int = 0, synth_neg_anchor: int = 0,
                       alpha_max: float = 0.5, generator: Optional[torch.Generator] = None,
                       ignore_index: int = 255) -> Tensor:
    """:func:`all_pairs_contrast_loss` with the paper's example sampling and negative synthesis.

    ``sampling="all"`` uses every positive and negative (= :func:`all_pairs_contrast_loss`); otherwise
    each anchor keeps ``hard_k`` positives and ``hard_k`` negatives chosen by
    :func:`select_examples` (``"hardest"`` against a ``contrast`` set on the CPU: by
    :func:`hardest_by_class`, the same columns without the ``[N, M]`` masks). With
    ``synth_neg_neg``/``synth_neg_anchor`` > 0, negatives mixed from each anchor's ``hard_k`` hardest
    negatives are appended (:func:`synthesize_negatives`).

    Returns:
        Scalar loss.
    """
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampled_contrast_loss: sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
    if sampling == "hardest" and contrast is not None and anchors.device.type == "cpu":
        sim, c_labels = _logits(anchors, anchor_labels, contrast, contrast_labels, temperature)
        pi, pos_m, ni, neg_m = hardest_by_class(sim, anchor_labels, c_labels, hard_k, ignore_index)
    else:
        sim, pos, neg = similarity_and_masks(anchors, anchor_labels, contrast, contrast_labels, temperature,
                                             ignore_index)
        if sampling != "all":
            pi, pos_m = select_examples(sim, pos, hard_k, sampling, False, semi_hard_frac, generator)
            ni, neg_m = select_examples(sim, neg, hard_k, sampling, True, semi_hard_frac, generator)
    if sampling == "all":
        pos_l, pos_m, neg_l, neg_m = sim, pos, sim, neg
    else:
        pos_l, neg_l = sim.gather(1, pi), sim.gather(1, ni)  # [N, k]
    extra = extra_mask = None
    if synth_neg_neg + synth_neg_anchor > 0:
        a = anchors.to(sim.dtype)
        c = a if contrast is None else contrast
        hi, hv = ((ni, neg_m) if sampling == "hardest"
                  else select_examples(sim, neg, hard_k, "hardest", True, generator=generator))
        syn = synthesize_negatives(a, c, hi, hv, synth_neg_neg, synth_neg_anchor, alpha_max, generator)
        extra, extra_mask = _full_precision_dot(a, syn.feats) / temperature, syn.mask
    return contrast_loss_from_logits(pos_l, pos_m, neg_l, neg_m, temperature, base_temperature, extra, extra_mask)


# The first names of these functions, kept importable (they did not say how the losses differ).
pixel_contrast_loss = all_pairs_contrast_loss
pico_contrast_loss = sampled_contrast_loss
memory_contrast_loss = memory_bank_contrast_loss
contrast_from_logits = contrast_loss_from_logits
