"""Pure-PyTorch reference implementations of the compiled ops.

Every function has the signature of its public op in :mod:`segproto.ops` and computes in
float64, casting results to the op's output dtype. They are the oracles of the tests and the
fallback when the compiled extension is unavailable (slower, same results up to rounding).
The exact semantics are in ``docs/ops.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor

NORM_EPS = 1e-12
PRIOR_TILE_ELEMS = 1 << 22


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic/accumulation dtype for a storage dtype (float64 stays float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_labels(labels: Tensor, num_classes: int, ignore_index: int, op: str) -> None:
    """Raise ValueError naming the first label that is neither a class nor ignore_index."""
    if labels.numel() == 0:
        return
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(
            f"segproto::{op}: label {value} is outside the valid range [0, {num_classes}) "
            f"and is not ignore_index ({ignore_index})"
        )


def _normalize(x: Tensor, eps: float = NORM_EPS, dim: int = -1) -> Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(eps)


def class_sums(
    feats: Tensor, labels: Tensor, num_classes: int, ignore_index: int = 255, normalize: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-class sums [K, D] (opmath dtype) and counts [K] (int64) of rows of feats [N, D]."""
    check_labels(labels, num_classes, ignore_index, "class_sums")
    x = feats.double()
    if normalize:
        x = _normalize(x)
    valid = labels != ignore_index
    lab = labels[valid]
    sums = x.new_zeros(num_classes, feats.shape[1]).index_add_(0, lab, x[valid])
    counts = torch.bincount(lab, minlength=num_classes)[:num_classes]
    return sums.to(opmath_dtype(feats.dtype)), counts


def prototype_update_(protos: Tensor, sums: Tensor, counts: Tensor, momentum: float) -> None:
    """In place: protos[c] <- normalize(m * protos[c] + (1 - m) * normalize(sums[c] / counts[c]))."""
    p = protos.double()
    mu = _normalize(sums.double() / counts.clamp_min(1).double()[:, None])
    unset = (p == 0).all(dim=1, keepdim=True)
    blended = _normalize(momentum * p + (1.0 - momentum) * mu)
    new = torch.where(unset, mu, blended)
    new = torch.where((counts > 0)[:, None], new, p)
    protos.copy_(new.to(protos.dtype))


def prototype_momentum_update_(
    protos: Tensor, feats: Tensor, labels: Tensor, momentum: float, ignore_index: int = 255
) -> None:
    """class_sums(normalize=True) followed by prototype_update_."""
    sums, counts = class_sums(feats, labels, protos.shape[0], ignore_index, normalize=True)
    prototype_update_(protos, sums, counts, momentum)


def memory_bank_push_(
    bank: Tensor, ptr: Tensor, count: Tensor, feats: Tensor, labels: Tensor, ignore_index: int = 255
) -> None:
    """Per-class ring buffer push of normalize(feats) rows, in row order (vectorised)."""
    num_classes, capacity, _ = bank.shape
    check_labels(labels, num_classes, ignore_index, "memory_bank_push_")
    valid = labels != ignore_index
    lab, x = labels[valid], _normalize(feats[valid].double())
    order = torch.argsort(lab, stable=True)
    lab, x = lab[order], x[order]
    counts = torch.bincount(lab, minlength=num_classes)[:num_classes]
    first = torch.cumsum(counts, 0) - counts
    j = torch.arange(lab.numel(), device=lab.device) - first[lab]  # rank within the class
    keep = j >= counts[lab] - capacity  # only the last `capacity` rows of a class survive
    slot = (ptr[lab] + j) % capacity
    bank[lab[keep], slot[keep]] = x[keep].to(bank.dtype)
    ptr.copy_((ptr + counts) % capacity)
    count.copy_(torch.clamp(count + counts, max=capacity))


def masked_cosine_correlation(query: Tensor, support: Tensor, mask: Tensor, eps: float = 1e-7) -> Tensor:
    """corr [B, Lq, Ls] = mask[b, j] * cos(query[b, :, i], support[b, :, j]) (differentiable)."""
    qn = _normalize(query.double(), eps, dim=1)  # [B, C, Lq]
    sn = _normalize(support.double(), eps, dim=1)  # [B, C, Ls]
    corr = torch.bmm(qn.transpose(1, 2), sn) * mask.double()[:, None, :]
    return corr.to(query.dtype)


def masked_cosine_prior(query: Tensor, support: Tensor, mask: Tensor, eps: float = 1e-7) -> Tensor:
    """prior [B, Lq] = max_j corr[b, i, j], computed over tiles of Ls (never [B, Lq, Ls] at once)."""
    b, _, lq = query.shape
    ls = support.shape[2]
    if ls == 0 or lq == 0 or b == 0:
        return query.new_zeros(b, lq)
    qn = _normalize(query.double(), eps, dim=1).transpose(1, 2)  # [B, Lq, C]
    sn = _normalize(support.double(), eps, dim=1) * mask.double()[:, None, :]  # [B, C, Ls]
    tile = max(1, min(ls, PRIOR_TILE_ELEMS // (b * lq)))
    best = None
    for j0 in range(0, ls, tile):
        m = torch.bmm(qn, sn[:, :, j0 : j0 + tile]).amax(dim=2)
        best = m if best is None else torch.maximum(best, m)
    return best.to(query.dtype)


def prcl_negatives_(pix: Tensor, cls: Tensor, counts: Tensor, words: Tensor, pixels: Tensor, start: Tensor,
                    count: Tensor, fill: int) -> Tensor:
    """Reference of ``segproto::prcl_negatives_`` (see :func:`segproto.ops.prcl_negatives_`)."""
    r, m = pix.shape
    k = counts.shape[1]
    low = (1 << 31) - 1
    sums = counts.sum(1)
    used = counts > 0
    bad = ((sums != 0) & (sums != m)) | (counts < 0).any(1) | (used & (count <= 0).unsqueeze(0)).any(1)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        raise RuntimeError(f"segproto::prcl_negatives_: row {row} of 'counts' does not sum to M = {m} (or 0) "
                           "over classes with pixels in the pool")
    mass = sums > 0
    classes = torch.arange(k, device=counts.device).expand(r, k)
    c = torch.repeat_interleave(classes[mass].reshape(-1), counts[mass].reshape(-1)).view(-1, m)
    v = (words.view(r, m)[mass].long() + 1).bitwise_and(low)
    n = count[c]
    prod = v * n
    pix.fill_(fill)
    cls.fill_(-1)
    pix[mass] = pixels[start[c] + (prod >> 31)]
    cls[mass] = c
    rows = torch.nonzero(mass).squeeze(1)
    hit = torch.nonzero(prod.bitwise_and(low) < n)
    return rows[hit[:, 0]] * m + hit[:, 1]


def select_per_class(labels: Tensor, keys: Tensor, num_per_class: int, num_classes: int,
                     ignore_index: int = 255) -> Tensor:
    """Pair by pair: the pixels of class c (not ignore_index) in image b, sorted by (key as float64,
    pixel), the first V of them, then -1."""
    check_labels(labels, num_classes, ignore_index, "select_per_class")
    b, n = labels.shape
    out = torch.full((b, num_classes, num_per_class), -1, dtype=torch.long)
    for i in range(b):
        lab, key = labels[i].tolist(), keys[i].double().tolist()
        for c in range(num_classes):
            pix = sorted((key[j], j) for j in range(n) if lab[j] == c != ignore_index)[:num_per_class]
            out[i, c, :len(pix)] = torch.tensor([j for _, j in pix], dtype=torch.long)
    return out
