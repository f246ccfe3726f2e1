"""Pure-PyTorch reference implementations of the compiled ops.

Every function has the signature of its public op in :mod:`segproto.ops` and computes in
float64, casting results to the op's output dtype. They are the oracles of the tests and the
fallback when the compiled extension is unavailable (slower, same results up to rounding).
The exact semantics are in ``docs/ops.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from segproto.labels import check_labels as _check_labels

NORM_EPS = 1e-12
PRIOR_TILE_ELEMS = 1 << 22


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic/accumulation dtype for a storage dtype (float64 stays float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_labels(labels: Tensor, num_classes: int, ignore_index: int, op: str) -> None:
    """Raise ValueError naming the first label that is neither a class nor ignore_index."""
    _check_labels(labels, num_classes, ignore_index, f"segproto::{op}")


# Argument checks: the same conditions, in the same order and with the same exception types
# (RuntimeError for TORCH_CHECK, ValueError for TORCH_CHECK_VALUE) as the compiled kernels'
# (csrc/common/checks.h and each op's *_check), so both paths accept and reject the same inputs.
def _need(ok: bool, op: str, msg: str, exc: type = RuntimeError) -> None:
    if not ok:
        raise exc(f"segproto::{op}: {msg}")


def _float(t: Tensor, op: str, name: str) -> None:
    _need(t.is_floating_point(), op, f"'{name}' must be a floating tensor (float16, bfloat16, float32 or "
                                     f"float64), got {t.dtype}")


def _long(t: Tensor, op: str, name: str) -> None:
    _need(t.dtype == torch.int64, op, f"'{name}' must be int64, got {t.dtype}")


def _dim(t: Tensor, dim: int, op: str, name: str, shape: str) -> None:
    _need(t.dim() == dim, op, f"'{name}' must have shape {shape}, got {list(t.shape)}")


def _device(a: Tensor, b: Tensor, op: str, na: str, nb: str) -> None:
    _need(a.device == b.device, op, f"'{na}' is on {a.device} but '{nb}' is on {b.device}")


def check_class_sums(feats: Tensor, labels: Tensor, num_classes: int, ignore_index: int) -> None:
    op = "class_sums"
    _float(feats, op, "feats")
    _dim(feats, 2, op, "feats", "[N, D]")
    _long(labels, op, "labels")
    _dim(labels, 1, op, "labels", "[N]")
    _need(labels.shape[0] == feats.shape[0], op, f"feats has {feats.shape[0]} rows but labels has {labels.shape[0]}")
    _device(feats, labels, op, "feats", "labels")
    _need(num_classes >= 0, op, f"num_classes must be >= 0, got {num_classes}")
    check_labels(labels, num_classes, ignore_index, op)


def check_prototype_update(protos: Tensor, sums: Tensor, counts: Tensor, momentum: float) -> None:
    op = "prototype_update_"
    _float(protos, op, "protos")
    _dim(protos, 2, op, "protos", "[K, D]")
    _float(sums, op, "sums")
    _need(sums.shape == protos.shape, op, f"sums must have the shape of protos {list(protos.shape)}, got "
                                          f"{list(sums.shape)}")
    _long(counts, op, "counts")
    _need(counts.dim() == 1 and counts.shape[0] == protos.shape[0], op,
          f"counts must have shape [{protos.shape[0]}], got {list(counts.shape)}")
    _device(protos, sums, op, "protos", "sums")
    _device(protos, counts, op, "protos", "counts")
    _need(0.0 <= momentum <= 1.0, op, f"momentum must be in [0, 1], got {momentum}")  # NaN fails too


def check_memory_bank_push(bank: Tensor, ptr: Tensor, count: Tensor, feats: Tensor, labels: Tensor,
                           ignore_index: int) -> None:
    op = "memory_bank_push_"
    _float(bank, op, "bank")
    _dim(bank, 3, op, "bank", "[K, M, D]")
    _need(bank.shape[1] > 0, op, "bank capacity M must be > 0")
    _need(bank.is_contiguous(), op, "bank must be contiguous (it is updated in place)")
    _long(ptr, op, "ptr")
    _long(count, op, "count")
    k = bank.shape[0]
    _need(ptr.dim() == 1 and ptr.shape[0] == k, op, f"ptr must have shape [{k}], got {list(ptr.shape)}")
    _need(count.dim() == 1 and count.shape[0] == k, op, f"count must have shape [{k}], got {list(count.shape)}")
    _float(feats, op, "feats")
    _dim(feats, 2, op, "feats", "[N, D]")
    _need(feats.shape[1] == bank.shape[2], op, f"feats has D={feats.shape[1]} but the bank has D={bank.shape[2]}")
    _long(labels, op, "labels")
    _need(labels.dim() == 1 and labels.shape[0] == feats.shape[0], op,
          f"labels must have shape [{feats.shape[0]}], got {list(labels.shape)}")
    for t, name in ((ptr, "ptr"), (count, "count"), (feats, "feats"), (labels, "labels")):
        _device(bank, t, op, "bank", name)
    _need(not bool(((ptr < 0) | (ptr >= bank.shape[1])).any()), op, f"ptr values must be in [0, M={bank.shape[1]})")
    check_labels(labels, k, ignore_index, op)


def check_masked_cosine(q: Tensor, s: Tensor, mask: Tensor, eps: float, op: str) -> None:
    _float(q, op, "query")
    _float(s, op, "support")
    _float(mask, op, "mask")
    _dim(q, 3, op, "query", "[B, C, Lq]")
    _dim(s, 3, op, "support", "[B, C, Ls]")
    _dim(mask, 2, op, "mask", "[B, Ls]")
    _need(q.dtype == s.dtype, op, f"query and support must have the same dtype, got {q.dtype} and {s.dtype}")
    _need(q.shape[0] == s.shape[0] and q.shape[1] == s.shape[1], op,
          f"query [B, C, Lq] and support [B, C, Ls] must agree on B and C, got {list(q.shape)} and {list(s.shape)}")
    _need(mask.shape[0] == s.shape[0] and mask.shape[1] == s.shape[2], op,
          f"mask must have shape [{s.shape[0]}, {s.shape[2]}], got {list(mask.shape)}")
    _device(q, s, op, "query", "support")
    _device(q, mask, op, "query", "mask")
    _need(eps > 0.0, op, f"eps must be > 0, got {eps}")


def check_select_per_class(labels: Tensor, keys: Tensor, num_per_class: int, num_classes: int) -> None:
    op = "select_per_class"
    _long(labels, op, "labels")
    _float(keys, op, "keys")
    _dim(labels, 2, op, "labels", "[B, N]")
    _need(keys.shape == labels.shape, op, f"'keys' must have the shape of 'labels' {list(labels.shape)}, got "
                                          f"{list(keys.shape)}")
    _device(labels, keys, op, "labels", "keys")
    _need(num_per_class >= 0, op, f"num_per_class must be >= 0, got {num_per_class}", ValueError)
    _need(num_classes >= 0, op, f"num_classes must be >= 0, got {num_classes}", ValueError)


def check_prcl_negatives(pix: Tensor, cls: Tensor, counts: Tensor, words: Tensor, pixels: Tensor, start: Tensor,
                         count: Tensor) -> None:
    op = "prcl_negatives_"
    for t, name in ((pix, "pix"), (cls, "cls"), (counts, "counts"), (pixels, "pixels"), (start, "start"),
                    (count, "count")):
        _long(t, op, name)
    _need(words.dtype == torch.int32, op, f"'words' must be int32, got {words.dtype}")
    _dim(pix, 2, op, "pix", "[R, M]")
    _dim(counts, 2, op, "counts", "[R, K]")
    _need(cls.shape == pix.shape, op, f"'cls' must have the shape of 'pix' {list(pix.shape)}, got {list(cls.shape)}")
    _need(pix.is_contiguous() and cls.is_contiguous(), op, "'pix' and 'cls' must be contiguous")
    r, m = pix.shape
    k = counts.shape[1]
    _need(counts.shape[0] == r, op, f"'counts' has {counts.shape[0]} rows, 'pix' {r}")
    _need(words.numel() == r * m, op, f"'words' must hold R * M = {r * m} words, got {words.numel()}")
    _need(start.numel() == k and count.numel() == k, op,
          f"'start' and 'count' must hold K = {k} entries, got {start.numel()} and {count.numel()}")


def _normalize(x: Tensor, eps: float = NORM_EPS, dim: int = -1) -> Tensor:
    """``x / (n if n > eps else eps)`` per vector, as the kernels compute it: a NaN norm takes the
    ``eps`` branch too (the NaN entries stay NaN, the others are divided by ``eps``)."""
    n = x.norm(dim=dim, keepdim=True)
    return x / torch.where(n > eps, n, torch.full_like(n, eps))


def class_sums(
    feats: Tensor, labels: Tensor, num_classes: int, ignore_index: int = 255, normalize: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-class sums [K, D] (opmath dtype) and counts [K] (int64) of rows of feats [N, D]."""
    check_class_sums(feats, labels, num_classes, ignore_index)
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
    check_prototype_update(protos, sums, counts, momentum)
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
    check_memory_bank_push(bank, ptr, count, feats, labels, ignore_index)
    num_classes, capacity, _ = bank.shape
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
    check_masked_cosine(query, support, mask, eps, "masked_cosine_correlation")
    qn = _normalize(query.double(), eps, dim=1)  # [B, C, Lq]
    sn = _normalize(support.double(), eps, dim=1)  # [B, C, Ls]
    corr = torch.bmm(qn.transpose(1, 2), sn) * mask.double()[:, None, :]
    return corr.to(query.dtype)


def masked_cosine_prior(query: Tensor, support: Tensor, mask: Tensor, eps: float = 1e-7) -> Tensor:
    """prior [B, Lq] = max_j corr[b, i, j], computed over tiles of Ls (never [B, Lq, Ls] at once)."""
    check_masked_cosine(query, support, mask, eps, "masked_cosine_prior")
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
    check_prcl_negatives(pix, cls, counts, words, pixels, start, count)
    r, m = pix.shape
    k = counts.shape[1]
    low = (1 << 31) - 1
    sums = counts.sum(1)
    used = counts > 0
    start, count = start.reshape(-1), count.reshape(-1)
    outside = (count <= 0) | (start < 0) | (start + count > pixels.numel())  # a class block outside the pool
    bad = ((sums != 0) & (sums != m)) | (counts < 0).any(1) | (used & outside.unsqueeze(0)).any(1)
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
    check_select_per_class(labels, keys, num_per_class, num_classes)
    check_labels(labels, num_classes, ignore_index, "select_per_class")
    b, n = labels.shape
    out = torch.full((b, num_classes, num_per_class), -1, dtype=torch.long)
    for i in range(b):
        lab, key = labels[i].tolist(), keys[i].double().tolist()
        for c in range(num_classes):
            pix = sorted((key[j], j) for j in range(n) if lab[j] == c != ignore_index)[:num_per_class]
            out[i, c, :len(pix)] = torch.tensor([j for _, j in pix], dtype=torch.long)
    return out
