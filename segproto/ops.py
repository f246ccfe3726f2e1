"""Public compiled ops of segproto (semantics: ``docs/ops.md``).

Each op dispatches to ``torch.ops.segproto.<name>`` (C++/CUDA kernels in ``csrc/``) when the
extension ``segproto._C`` is loaded and has kernels for the tensors' device, and to the
pure-PyTorch reference in :mod:`segproto._reference` otherwise. If the extension cannot load,
a warning with the reason is issued once; ``SEGPROTO_REQUIRE_EXT=1`` turns that into an error.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from segproto import _reference as ref
from segproto._extension import EXT as _EXT
from segproto._extension import EXT_CUDA as _EXT_CUDA
from segproto._extension import _extension_files, build_info, elf_problem  # the last two: for the loading tests


__all__ = [
    "build_info",
    "class_sums",
    "class_sums_backward",
    "prototype_update_",
    "prototype_momentum_update_",
    "memory_bank_push_",
    "masked_cosine_correlation",
    "masked_cosine_prior",
    "sample_per_class",
    "sample_per_class_dense",
    "uniform_pixel_keys",
    "select_per_class",
    "prcl_negatives_",
    "has_prcl_negatives_kernel",
]


def _use_ext(t: Tensor) -> bool:
    return _EXT and (t.device.type == "cpu" or (t.device.type == "cuda" and _EXT_CUDA))


def class_sums(
    feats: Tensor, labels: Tensor, num_classes: int, ignore_index: int = 255, normalize: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-class sums of rows, deterministic (CSR order, no atomics); differentiable with respect
    to ``feats`` (:func:`class_sums_backward`).

    Args:
        feats: [N, D] float16/bfloat16/float32/float64.
        labels: [N] int64; ``ignore_index`` rows are skipped, other out-of-range labels raise.
        num_classes: K.
        ignore_index: label to skip.
        normalize: sum ``normalize(feats[i])`` (L2, eps 1e-12) instead of ``feats[i]``.

    Returns:
        sums [K, D] in float32 (float64 for float64 feats) and counts [K] int64.
    """
    if _use_ext(feats):
        return torch.ops.segproto.class_sums(feats, labels, num_classes, ignore_index, normalize)
    return ref.class_sums(feats, labels, num_classes, ignore_index, normalize)


def class_sums_backward(grad_sums: Tensor, feats: Tensor, labels: Tensor, ignore_index: int = 255,
                        normalize: bool = False) -> Tensor:
    """Gradient of ``class_sums(...)[0]`` with respect to ``feats`` (``[N, D]``, feats' dtype).

    Row ``i`` receives ``grad_sums[labels[i]]`` (zero for ignored rows); with ``normalize`` it is
    taken through ``x / max(||x||, 1e-12)``: ``(g - x_hat (x_hat . g)) / ||x||``, or ``g / 1e-12``
    where the norm is clamped.
    """
    valid = labels != ignore_index
    g = grad_sums[torch.where(valid, labels, 0)] * valid.unsqueeze(1).to(grad_sums.dtype)  # [N, D]
    if normalize:
        x = feats.to(g.dtype)
        norm = x.norm(dim=1, keepdim=True)
        clamped = norm <= 1e-12
        safe = torch.where(clamped, torch.ones_like(norm), norm)
        x_hat = x / safe
        g = torch.where(clamped, g / 1e-12, (g - x_hat * (x_hat * g).sum(1, keepdim=True)) / safe)
    return g.to(feats.dtype)


def prototype_update_(protos: Tensor, sums: Tensor, counts: Tensor, momentum: float) -> None:
    """In place, for classes with counts > 0: mu = normalize(sums/counts); an all-zero (unset)
    prototype becomes mu, otherwise ``protos[c] = normalize(m * protos[c] + (1 - m) * mu)``.

    Args:
        protos: [K, D] float, mutated. sums: [K, D], counts: [K] int64 (from ``class_sums``).
        momentum: m in [0, 1].
    """
    if _use_ext(protos):
        torch.ops.segproto.prototype_update_(protos, sums, counts, float(momentum))
    else:
        ref.prototype_update_(protos, sums, counts, float(momentum))


def prototype_momentum_update_(
    protos: Tensor, feats: Tensor, labels: Tensor, momentum: float, ignore_index: int = 255
) -> None:
    """``class_sums(feats, labels, K, ignore_index, normalize=True)`` then ``prototype_update_``."""
    sums, counts = class_sums(feats, labels, protos.shape[0], ignore_index, normalize=True)
    prototype_update_(protos, sums, counts, momentum)


def memory_bank_push_(
    bank: Tensor, ptr: Tensor, count: Tensor, feats: Tensor, labels: Tensor, ignore_index: int = 255
) -> None:
    """Per-class ring-buffer push (the PiCo pixel and region queues).

    Rows of class c, in increasing row order, are L2-normalised and written to slots
    ``(ptr[c] + j) mod M``; then ``ptr[c] = (ptr[c] + n) mod M`` and ``count[c] = min(count[c] + n, M)``.

    Args:
        bank: [K, M, D] float, contiguous, mutated. ptr, count: [K] int64, mutated.
        feats: [N, D] float (any float dtype; normalised in float32/float64). labels: [N] int64.
    """
    if _use_ext(bank):
        torch.ops.segproto.memory_bank_push_(bank, ptr, count, feats, labels, ignore_index)
    else:
        ref.memory_bank_push_(bank, ptr, count, feats, labels, ignore_index)


def masked_cosine_correlation(query: Tensor, support: Tensor, mask: Tensor, eps: float = 1e-7) -> Tensor:
    """``corr[b, i, j] = mask[b, j] * <q, s> / (max(||q||, eps) * max(||s||, eps))``.

    Args:
        query: [B, C, Lq], support: [B, C, Ls] (same float dtype), mask: [B, Ls] in [0, 1]
            (not differentiated).

    Returns:
        [B, Lq, Ls] in the input dtype; differentiable w.r.t. query and support.
    """
    if _use_ext(query):
        return torch.ops.segproto.masked_cosine_correlation(query, support, mask, eps)
    return ref.masked_cosine_correlation(query, support, mask, eps)


def masked_cosine_prior(query: Tensor, support: Tensor, mask: Tensor, eps: float = 1e-7) -> Tensor:
    """Few-shot prior ``prior[b, i] = max_j corr[b, i, j]`` without materialising [B, Lq, Ls].

    Not differentiable: priors come from frozen backbone features. Raises if called on inputs
    that require grad while autograd is enabled (wrap the call in ``torch.no_grad()``).
    With several shots, call once per shot and average. Empty support (Ls = 0) gives zeros.

    Returns:
        [B, Lq] in the input dtype.
    """
    if torch.is_grad_enabled() and (query.requires_grad or support.requires_grad):
        raise RuntimeError(
            "segproto.ops.masked_cosine_prior has no gradient (priors use frozen features); "
            "call it under torch.no_grad() or pass detached tensors"
        )
    if _use_ext(query):
        return torch.ops.segproto.masked_cosine_prior(query, support, mask, eps)
    return ref.masked_cosine_prior(query, support, mask, eps)


def select_per_class(labels: Tensor, keys: Tensor, num_per_class: int, num_classes: int,
                     ignore_index: int = 255, check: bool = True) -> Tensor:
    """Per (image, class), the ``num_per_class`` pixels with the smallest keys (``docs/ops.md``).

    Args:
        labels: [B, N] int64 per-image labels (flatten spatial dims first).
        keys: [B, N] floating, one key per pixel (keys of ``ignore_index`` pixels are not read).
        num_per_class: V. num_classes: K; a label outside [0, K) other than ``ignore_index`` raises.
        check: validate the labels. The CPU kernel always does (in its single pass); on other
            devices the check costs a host sync, and ``check=False`` skips it for labels the caller
            has already validated (out-of-range labels are then ignored, never written out).

    Returns:
        [B, K, V] int64: for each (image b, class c), the pixels ``i`` with ``labels[b, i] == c``
        in increasing ``(keys[b, i], i)`` order, the first ``min(n, V)`` of them, then -1.
    """
    if labels.dim() != 2 or keys.shape != labels.shape:
        raise ValueError(f"select_per_class: labels and keys must both be [B, N], got {tuple(labels.shape)} "
                         f"and {tuple(keys.shape)}")
    if num_per_class < 0 or num_classes < 0:
        raise ValueError(f"select_per_class: num_per_class and num_classes must be >= 0, got {num_per_class} "
                         f"and {num_classes}")
    if _EXT and labels.device.type == "cpu":
        return torch.ops.segproto.select_per_class(labels, keys, num_per_class, num_classes, ignore_index)
    ref.check_select_per_class(labels, keys, num_per_class, num_classes)  # what the CPU kernel checks
    if check:
        ref.check_labels(labels, num_classes, ignore_index, "select_per_class")
    return _select_per_class_sorted(labels, keys, num_per_class, num_classes, ignore_index)


def _select_per_class_sorted(labels: Tensor, keys: Tensor, v: int, k: int, ignore_index: int) -> Tensor:
    """:func:`select_per_class` as fixed-shape ATen calls (two stable sorts, a scatter): no host
    sync, so the CUDA path of PiCo's memory update never waits on the device. Labels are not checked
    here; out-of-range ones are dropped with the ignored pixels."""
    b, n = labels.shape
    dev = labels.device
    if b * k * v == 0:
        return torch.full((b, k, v), -1, dtype=torch.long, device=dev)
    flat = labels.reshape(-1)
    valid = (flat != ignore_index) & (flat >= 0) & (flat < k)
    image = torch.arange(b, device=dev).repeat_interleave(n)
    pair = torch.where(valid, image * k + flat, b * k)  # b * k: the bin of every dropped pixel
    order = torch.sort(keys.reshape(-1), stable=True)[1]  # by (key, pixel) ...
    grouped, by_pair = torch.sort(pair[order], stable=True)
    order = order[by_pair]  # ... grouped by pair
    first = torch.searchsorted(grouped, torch.arange(b * k + 1, device=dev))  # (bincount reads the device)
    rank = torch.arange(b * n, device=dev) - first[grouped]
    slot = torch.where((rank < v) & (grouped < b * k), grouped * v + rank.clamp(max=v - 1), b * k * v)
    out = torch.full((b * k * v + 1,), -1, dtype=torch.long, device=dev)
    out.scatter_(0, slot, order % n)
    return out[:-1].view(b, k, v)


def uniform_pixel_keys(labels: Tensor, ignore_index: int = 255,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """Uniform random keys in [0, 1), shaped like ``labels``, for the per-pixel draws of
    :func:`sample_per_class_dense` and PiCo's anchor sampler. On CPU the valid pixels take consecutive
    draws in flat order (the generator advances by the number of valid pixels); elsewhere every
    pixel takes one draw (no host sync for the valid count)."""
    if labels.device.type != "cpu":
        return torch.rand(labels.shape, generator=generator, device=labels.device)
    flat = labels.reshape(-1)
    valid = torch.nonzero(flat != ignore_index).squeeze(1)
    keys = torch.ones(flat.shape)
    keys[valid] = torch.rand(valid.numel(), generator=generator)
    return keys.view(labels.shape)


def sample_per_class_dense(labels: Tensor, num_per_class: int, num_classes: int, ignore_index: int = 255,
                           generator: Optional[torch.Generator] = None, check: bool = True) -> Tensor:
    """Up to ``num_per_class`` distinct uniformly random pixels of each (image, class), seeded, as a
    fixed-shape ``[B, K, V]`` table (``-1`` where a pair has fewer than V pixels).

    :func:`select_per_class` on uniform keys from ``generator`` (on ``labels.device``). The shape
    does not depend on the labels, so nothing waits for the device; PiCo's memory update pushes the
    table as it is (``-1`` rows get an ignored class). ``check``: as in :func:`select_per_class`.
    """
    if labels.dim() != 2:
        raise ValueError(f"sample_per_class: labels must be [B, N], got shape {tuple(labels.shape)}")
    keys = uniform_pixel_keys(labels, ignore_index, generator)
    return select_per_class(labels, keys, num_per_class, num_classes, ignore_index, check)


def sample_per_class(
    labels: Tensor,
    num_per_class: int,
    num_classes: int,
    ignore_index: int = 255,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Uniformly draws up to ``num_per_class`` pixels of each (image, class), without replacement.

    :func:`sample_per_class_dense` with the ``-1`` entries dropped (one host sync for the count).

    Args:
        labels: [B, N] int64 per-image labels (flatten spatial dims first).
        num_per_class: V, the maximum number of pixels drawn per (image, class).
        num_classes: K; labels outside [0, K) other than ``ignore_index`` raise.

    Returns:
        (image index [S], pixel index [S], class [S]) sorted by (image, class), within a pair in
        draw order: for each pair with n pixels, min(n, V) distinct pixels of that class.
    """
    table = sample_per_class_dense(labels, num_per_class, num_classes, ignore_index, generator)
    b, k, v = table.shape
    hit = torch.nonzero(table.reshape(-1) >= 0).squeeze(1)  # increasing: (image, class, draw) order
    pair = torch.div(hit, v, rounding_mode="floor")
    return torch.div(pair, k, rounding_mode="floor"), table.reshape(-1)[hit], pair % k


def has_prcl_negatives_kernel(t: Tensor) -> bool:
    """Whether :func:`prcl_negatives_` has a compiled kernel for ``t``'s device (CPU only: on a GPU
    the PyTorch path of :mod:`segproto.losses.prcl` is already one pass of fused-enough kernels)."""
    return _EXT and t.device.type == "cpu"


def prcl_negatives_(pix: Tensor, cls: Tensor, counts: Tensor, words: Tensor, pixels: Tensor, start: Tensor,
                    count: Tensor, fill: int) -> Tensor:
    """The PRCL negative sampler's pixel pass, in place (``docs/ops.md``): per row of ``counts``
    ([R, K] draws of each class, class order), each draw's 31-bit ``words`` entry ``w`` gives
    ``v = (w + 1) mod 2^31`` and the pixel ``pixels[start[c] + (v * count[c]) >> 31]`` of its class
    ``c``; rows whose counts are all 0 get ``fill`` and class -1.

    Args:
        pix, cls: [R, M] int64 outputs. words: [R * M] int32 in [0, 2^31). pixels: [P] int64,
            the class-sorted pool; start, count: [K] int64 blocks of the pool.

    Returns:
        Ascending flat positions of the draws with ``(v * count) mod 2^31 < count`` (a superset of
        the Lemire rejections, which the caller redraws).
    """
    if has_prcl_negatives_kernel(pix):
        return torch.ops.segproto.prcl_negatives_(pix, cls, counts, words, pixels, start, count, int(fill))
    return ref.prcl_negatives_(pix, cls, counts, words, pixels, start, count, int(fill))


# ---------------------------------------------------------------------------------------------
# Fake kernels (torch.compile / meta tensors) and autograd, registered only with the extension.
if _EXT:

    @torch.library.register_fake("segproto::class_sums")
    def _class_sums_fake(feats, labels, num_classes, ignore_index=255, normalize=False):
        sums = feats.new_empty((num_classes, feats.shape[1]), dtype=ref.opmath_dtype(feats.dtype))
        return sums, labels.new_empty((num_classes,))

    @torch.library.register_fake("segproto::prototype_update_")
    def _prototype_update_fake(protos, sums, counts, momentum):
        return None

    @torch.library.register_fake("segproto::memory_bank_push_")
    def _memory_bank_push_fake(bank, ptr, count, feats, labels, ignore_index=255):
        return None

    @torch.library.register_fake("segproto::masked_cosine_correlation")
    def _corr_fake(query, support, mask, eps=1e-7):
        return query.new_empty((query.shape[0], query.shape[2], support.shape[2]))

    @torch.library.register_fake("segproto::masked_cosine_correlation_backward")
    def _corr_backward_fake(grad, query, support, mask, eps):
        return torch.empty_like(query), torch.empty_like(support)

    @torch.library.register_fake("segproto::masked_cosine_prior")
    def _prior_fake(query, support, mask, eps=1e-7):
        return query.new_empty((query.shape[0], query.shape[2]))

    @torch.library.register_fake("segproto::select_per_class")
    def _select_per_class_fake(labels, keys, num_per_class, num_classes, ignore_index=255):
        return labels.new_empty((labels.shape[0], num_classes, num_per_class))

    @torch.library.register_fake("segproto::prcl_negatives_")
    def _prcl_negatives_fake(pix, cls, counts, words, pixels, start, count, fill):
        return pix.new_empty((torch.library.get_ctx().new_dynamic_size(),))

    def _corr_setup_context(ctx, inputs, output):
        query, support, mask, eps = inputs
        ctx.save_for_backward(query, support, mask)
        ctx.eps = eps

    def _corr_backward(ctx, grad):
        query, support, mask = ctx.saved_tensors
        gq, gs = torch.ops.segproto.masked_cosine_correlation_backward(grad, query, support, mask, ctx.eps)
        return gq, gs, None, None

    torch.library.register_autograd(
        "segproto::masked_cosine_correlation", _corr_backward, setup_context=_corr_setup_context
    )

    def _class_sums_setup_context(ctx, inputs, output):
        feats, labels, num_classes, ignore_index, normalize = inputs
        ctx.save_for_backward(feats, labels)
        ctx.ignore_index, ctx.normalize = ignore_index, normalize

    def _class_sums_backward(ctx, grad_sums, grad_counts):
        feats, labels = ctx.saved_tensors
        return class_sums_backward(grad_sums, feats, labels, ctx.ignore_index, ctx.normalize), None, None, None, None

    torch.library.register_autograd(
        "segproto::class_sums", _class_sums_backward, setup_context=_class_sums_setup_context
    )
