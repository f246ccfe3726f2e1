"""PRCL's vectorised anchor and negative sampler: CSR pools of pixel indices per class, one
binomial chain for the negative classes, one uniform word per draw, all determined by a
``torch.Generator`` (``docs/methods/prcl.md``). The loss that uses it is
:mod:`segproto.losses.prcl_loss`; :mod:`segproto.losses` exports both."""

from __future__ import annotations

import sys
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from segproto import ops

from .prcl_mls import mutual_likelihood_score

__all__ = ["negative_class_probs", "sample_anchors", "sample_negative_pixels"]


class _ClassPool(NamedTuple):
    """A CSR pool: the indices of the pool's pixels sorted by class (stably: increasing index within a
    class, or, with a split, the split pixels first, each part by increasing index)."""

    pixels: Tensor  # [N + 1] int64: pixels[start[c]:start[c] + count[c]] are the pixels of class c; the
    #                 masked-out pixels follow, then a guard entry N (addressable, never drawn)
    start: Tensor  # [K] int64
    count: Tensor  # [K] int64
    first: Optional[Tensor] = None  # [K] int64: how many of a block's pixels are split pixels


def _class_pool(labels: Tensor, mask: Tensor, num_classes: int, split: Optional[Tensor] = None) -> _ClassPool:
    """The pixels of ``mask`` grouped by class with ONE stable sort of a small integer key
    (``uint8`` for K <= 127: a radix sort of one byte); ``split`` [N] bool puts each class's split
    pixels first in its block, so the hard pool is a prefix of every block (no second sort, no
    filter)."""
    k = num_classes
    nkeys = 2 * (k + 1) if split is not None else k + 1
    kdt = torch.uint8 if nkeys <= 256 else torch.int16 if nkeys <= 1 << 15 else torch.int32
    n = labels.numel()
    key = torch.empty(n + 1, dtype=kdt, device=labels.device)  # + a guard entry, sorted last
    key[n] = nkeys - 1
    body = key[:n]
    if kdt == torch.uint8:  # masked pixels -> 255 -> k (vectorised byte ops; a bool where is not)
        body.copy_(labels).bitwise_or_((~mask).view(torch.uint8).neg()).clamp_(max=k)
    else:
        torch.where(mask, labels.to(kdt), torch.tensor(k, dtype=kdt, device=labels.device), out=body)
    if split is not None:
        body.mul_(2).add_((~split).to(kdt))
    order = torch.argsort(key, stable=True)
    cnt = torch.bincount(key, minlength=nkeys)
    start = torch.cumsum(cnt, 0) - cnt
    if split is None:
        return _ClassPool(order, start[:k], cnt[:k])
    first = cnt[0:2 * k:2]
    return _ClassPool(order, start[0:2 * k:2], first + cnt[1:2 * k:2], first)


def _uniform_below(n: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Uniform integers in [0, n) elementwise (n: float64, 1 <= n < 2^53), exact to 2^-53:
    ``int(u * n)`` with ``u`` a 53-bit float64 uniform < 1, and ``fl(u * n) < n`` for such u, n."""
    u = torch.rand(n.shape, generator=generator, device=n.device, dtype=torch.float64)
    return u.mul_(n).long()


def _multinomial_counts(p: Tensor, n: int, generator: Optional[torch.Generator], repeats: int = 1) -> Tensor:
    """Per row, counts of ``n`` iid draws from ``p`` (rows sum to 1, or 0 = no draws), by the
    binomial chain ``c_k ~ Bin(n - sum_{j<k} c_j, p_k / sum_{j>=k} p_j)``: O(K) ops on [R].
    Each row of ``p`` stands for ``repeats`` consecutive rows of the result ([R * repeats, K])."""
    suffix = p.flip(1).cumsum(1).flip(1)
    q = torch.where(suffix > 0, p / suffix.clamp_min(1e-300), torch.zeros_like(p)).clamp_(0.0, 1.0)
    q = q.t().repeat_interleave(repeats, 1) if repeats > 1 else q.t().contiguous()  # [K, R]
    out = torch.empty_like(q)
    rem = torch.full((q.shape[1],), float(n), dtype=p.dtype, device=p.device)
    for k in range(q.shape[0]):
        c = torch.binomial(rem, q[k], generator=generator)
        out[k] = c
        rem.sub_(c)
    return out.t().long()


def _anchors_from_pool(pool: _ClassPool, classes: Tensor, num_anchors: int,
                       generator: Optional[torch.Generator]) -> tuple[Tensor, Tensor]:
    cnt = pool.count[classes]
    ok = cnt > 0
    off = _uniform_below(cnt.clamp_min(1).double().unsqueeze(1).expand(-1, num_anchors), generator)
    if pool.pixels.numel() == 0:
        return torch.zeros_like(off), ok
    pos = (pool.start[classes].unsqueeze(1) + off).clamp_(max=pool.pixels.numel() - 1)
    return torch.where(ok.unsqueeze(1), pool.pixels[pos], torch.zeros_like(pos)), ok


def sample_anchors(labels: Tensor, probs: Tensor, classes: Tensor, num_anchors: int, threshold: float,
                   num_classes: int, *, fallback: bool = False, generator: Optional[torch.Generator] = None,
                   ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """``num_anchors`` pixels per class, with replacement, from its *hard* pixels (valid, labelled
    c, ``probs < threshold``). A class without hard pixels gets none (the public code skips it),
    or with ``fallback`` draws from all its valid pixels.

    Args:
        labels: [N] int64. probs: [N] predicted probability of each pixel's label.
        classes: [C] int64 classes to draw for.

    Returns:
        (anchors [C, A] pixel indices (0 where not ok), ok [C] bool).
    """
    pool = _class_pool(labels, labels != ignore_index, num_classes, split=probs < threshold)
    return _anchors_from_pool(_anchor_pool(pool, fallback), classes, num_anchors, generator)


def _anchor_pool(valid: _ClassPool, fallback: bool) -> _ClassPool:
    """The hard pool: the split prefix of every block of a pool built with ``split = probs < thr``;
    with ``fallback``, a class without hard pixels uses its whole block (all its valid pixels)."""
    count = torch.where(valid.first > 0, valid.first, valid.count) if fallback else valid.first
    return _ClassPool(valid.pixels, valid.start, count)


_BITS = 31  # random bits per negative draw: torch's int32 random_() gives 31 uniform bits
_LOW = (1 << _BITS) - 1


def _negatives_chunk_elems(device: torch.device) -> int:
    # CPU: blocks of draws whose int64 temporaries stay in each thread's L2; GPU: one block.
    return 1 << 31 if device.type == "cuda" else min(1 << 20, (1 << 16) * max(1, torch.get_num_threads()))


def _random_words(out: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Fills int32 ``out`` (any strides) with uniform 31-bit words in [0, 2^31): ``random_()``."""
    return out.random_(generator=generator)


def _empty_long(*shape: int, device: torch.device) -> Tensor:
    """``torch.empty(shape, int64)``: the sampler's outputs, written once."""
    return torch.empty(shape, dtype=torch.long, device=device)


def _negatives_from_pool(pool: _ClassPool, class_probs: Tensor, num_samples: int, generator: Optional[torch.Generator],
                         fill: int = -1, chunk_elems: Optional[int] = None,
                         repeats: int = 1) -> tuple[Tensor, Tensor]:
    """Per row, ``num_samples`` iid draws: a class ``~ class_probs[row]``, then a uniform pixel of it
    (each row of ``class_probs`` [R', K] stands for ``repeats`` rows: the result is [R' * repeats, S]).

    1. Class counts per row from the binomial chain (exactly multinomial). A row's draws are laid
       out by class, so every per-draw quantity of the class is piecewise constant along the row:
       the class itself and the packed ``start << 31 | n`` of its pool block are cumsums of their
       jumps at the class boundaries (no ``repeat_interleave``, no per-draw table gather).
    2. One 31-bit uniform word per draw (int32 ``random_``, written straight into int64 zeros);
       the offset in the class's block of ``n`` pixels is Lemire's ``(v * n) >> 31``, exactly
       uniform with its rejection: the rare draws with ``(v * n) mod 2^31 < 2^31 mod n``
       (probability < n / 2^31) draw new words after all others, in position order.
    3. The pixel is ``pixels[start + offset]`` (``index_select``).
    After the chain, the work runs in row blocks of ``chunk_elems`` draws (cache-sized on CPU, one
    block on CUDA); the draws do not depend on the block size. Generator order: the chain, the
    words (row-major), the redraws. Rows without mass get ``fill`` and class -1.
    """
    r = class_probs.shape[0] * repeats
    m = num_samples
    dev = class_probs.device
    pix, cls = _empty_long(2, r, m, device=dev).unbind(0)
    if r == 0 or m == 0:
        return pix, cls
    if pool.pixels.numel() > _LOW:
        raise ValueError(f"prcl: at most 2^31 - 1 pixels, got {pool.pixels.numel() - 1}")
    p = class_probs.to(torch.float64) * (pool.count > 0)
    p = p / p.sum(1, keepdim=True).clamp_min(1e-300)
    counts = _multinomial_counts(p, m, generator, repeats)  # [R, K]
    if ops.has_prcl_negatives_kernel(pix):  # the same draws in one compiled pass (docs/ops.md)
        return _negatives_compiled(pool, counts, pix, cls, generator, fill, chunk_elems)
    return _negatives_torch(pool, counts, pix, cls, generator, fill, chunk_elems)


def _negatives_compiled(pool: _ClassPool, counts: Tensor, pix: Tensor, cls: Tensor,
                        generator: Optional[torch.Generator], fill: int,
                        chunk_elems: Optional[int]) -> tuple[Tensor, Tensor]:
    """Steps 2 and 3 of :func:`_negatives_from_pool` in the compiled ``prcl_negatives_`` pass, given
    the class ``counts [R, K]``; writes ``pix`` and ``cls`` ``[R, S]`` and returns them."""
    r, m = pix.shape
    dev = pix.device
    # row blocks whose words stay in cache (the same word sequence as one call: random_ is serial)
    rows = min(r, max(1, (chunk_elems or _negatives_chunk_elems(dev)) // m))
    buf = torch.empty(rows * m, dtype=torch.int32, device=dev)
    suspects, suspect_words = [], []
    for i in range(0, r, rows):
        j = min(i + rows, r)
        words = _random_words(buf[:(j - i) * m], generator)
        pos = ops.prcl_negatives_(pix[i:j], cls[i:j], counts[i:j], words, pool.pixels, pool.start,
                                  pool.count, fill)
        if pos.numel():
            suspects.append(pos + i * m)
            suspect_words.append((words[pos].long() + 1).bitwise_and_(_LOW))
    if suspects:
        _redraw_rejected(pool.pixels, pool.start, torch.cat([pool.count, pool.count.new_zeros(1)]),
                         pix.view(-1), cls.view(-1), torch.cat(suspects), torch.cat(suspect_words), generator)
    return pix, cls


def _negatives_torch(pool: _ClassPool, counts: Tensor, pix: Tensor, cls: Tensor,
                     generator: Optional[torch.Generator], fill: int,
                     chunk_elems: Optional[int]) -> tuple[Tensor, Tensor]:
    """Steps 2 and 3 of :func:`_negatives_from_pool` in PyTorch ops (CUDA, or no compiled kernel),
    given the class ``counts [R, K]``; writes ``pix`` and ``cls`` ``[R, S]`` and returns them."""
    r, m = pix.shape
    dev = pix.device
    ends = counts.cumsum(1)  # [R, K]: where class k + 1 starts; class K is a sentinel without pixels
    rest = m - ends[:, -1]  # the sentinel's draws: > 0 only in rows without mass
    mark_at, mark = ends.clamp(max=m - 1), (ends < m).long()
    zero = pool.count.new_zeros(1)
    n_tab = torch.cat([pool.count, zero])  # [K + 1]
    # packed per class: start << 31 | n (n < 2^31); along a row it is piecewise constant, so per draw
    # it is a cumsum of its jumps at the class boundaries (cheaper than table gathers per draw)
    x_tab = (torch.cat([pool.start, zero]) << _BITS) + n_tab
    x_first = x_tab[:1].view(1, 1)
    x_jump = x_tab.diff().unsqueeze(0) * mark  # [R, K]
    rows = min(r, max(1, (chunk_elems or _negatives_chunk_elems(dev)) // m))
    size = -(-rows * m // 8) * 8
    marks = torch.empty(rows, m, dtype=torch.long, device=dev)
    x = torch.empty(rows, m, dtype=torch.long, device=dev)
    nb = torch.empty(rows * m, dtype=torch.long, device=dev)
    low = torch.empty(rows * m, dtype=torch.long, device=dev)
    t = torch.zeros(rows * m, dtype=torch.long, device=dev)
    sus = torch.zeros(size, dtype=torch.bool, device=dev)
    # one 31-bit word per draw, written into the low halves of int64 zeros (no int32 -> int64 pass)
    words = t.view(torch.int32).view(-1, 2)[:, 0 if sys.byteorder == "little" else 1]
    suspects, suspect_words = [], []
    for i in range(0, r, rows):
        j = min(i + rows, r)
        h = j - i
        e = h * m
        torch.cumsum(marks[:h].zero_().scatter_add_(1, mark_at[i:j], mark[i:j]), 1, out=cls[i:j])
        xb = x[:h].zero_()
        xb[:, :1] = x_first
        xx = xb.scatter_add_(1, mark_at[i:j], x_jump[i:j]).cumsum_(1).view(-1)
        n = torch.bitwise_and(xx, _LOW, out=nb[:e])
        tt = t[:e]  # its high halves are 0: it holds zeros or the last block's pool positions < 2^31
        _random_words(words[:e], generator)  # w
        # t = start << 31 + (w + 1) * n: Lemire's offset of the word v = (w + 1) mod 2^31 in the high
        # bits, its remainder (v * n) mod 2^31 in the low bits (v = 0, i.e. w = 2^31 - 1, leaves the
        # block: its remainder is 0 < n, so it is a suspect and is recomputed below)
        tt.mul_(n).add_(xx)
        s = torch.lt(torch.bitwise_and(tt, _LOW, out=low[:e]), n, out=sus[:e])
        if bool(sus.view(torch.int64).any()):
            s = torch.nonzero(s).squeeze(1)
            suspects.append(s + i * m)
            # their words, back from t = (x - n) + v * n, v = w + 1 in [1, 2^31] (w was overwritten)
            suspect_words.append((tt[s] - xx[s] + n[s]).div_(n[s], rounding_mode="floor").bitwise_and_(_LOW))
            sus.zero_()
        torch.index_select(pool.pixels, 0, tt.bitwise_right_shift_(_BITS), out=pix[i:j].view(-1))
    if suspects:
        _redraw_rejected(pool.pixels, pool.start, n_tab, pix.view(-1), cls.view(-1), torch.cat(suspects),
                         torch.cat(suspect_words), generator)
    if bool((rest > 0).any()):
        empty = rest > 0
        pix[empty] = fill
        cls[empty] = -1
    return pix, cls


def _redraw_rejected(pixels: Tensor, start: Tensor, n_tab: Tensor, pix: Tensor, cls: Tensor, pos: Tensor,
                     words: Tensor, generator: Optional[torch.Generator]) -> None:
    """Exact Lemire for the flat draws ``pos`` with 31-bit uniform words ``words`` (the suspects:
    ``(v * n) mod 2^31 < n``, a superset of the rejections): ``pix`` is recomputed from ``v``, and
    while ``(v * n) mod 2^31 < 2^31 mod n`` the draw takes a new word (one call per round, in
    position order)."""
    c = cls[pos]
    n = n_tab[c]
    v = words
    while pos.numel():
        prod = v * n
        bad = (prod & _LOW) < torch.remainder(torch.full_like(n, 1 << _BITS), n.clamp_min(1))
        ok = ~bad
        pix[pos[ok]] = pixels[start[c[ok]] + (prod[ok] >> _BITS)]
        if not bool(bad.any()):
            return
        pos, c, n = pos[bad], c[bad], n[bad]
        v = _random_words(torch.empty(pos.numel(), dtype=torch.int32, device=pos.device), generator).long()


def sample_negative_pixels(labels: Tensor, class_probs: Tensor, num_samples: int, *,
                           generator: Optional[torch.Generator] = None,
                           ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Per row r, ``num_samples`` iid negatives: a class ``c' ~ class_probs[r]``, then a uniform
    valid pixel of ``c'``.

    Vectorised: the per-row class counts come from one binomial chain (O(K) ops on [R]), the
    pixel from one exactly uniform offset (a 31-bit word, Lemire's multiply-shift with rejection)
    into a class-sorted (CSR) pool of valid pixels. A row's samples are ordered by class (the
    multiset is exactly that of iid draws). Classes without a valid pixel get probability 0 (rows
    renormalised); rows with no mass get pixel and class -1.

    Args:
        labels: [N] int64. class_probs: [R, K] non-negative (rows need not be normalised).

    Returns:
        (pixels [R, S] int64, classes [R, S] int64).
    """
    pool = _class_pool(labels, labels != ignore_index, class_probs.shape[1])
    return _negatives_from_pool(pool, class_probs, num_samples, generator)


def negative_class_probs(proto_mu: Tensor, proto_var: Tensor, classes: Tensor, present: Tensor,
                         temperature: float) -> Tensor:
    """``softmax`` over the other present classes of ``MLS(proto_c, proto_c') / T``.

    Args:
        proto_mu, proto_var: [K, D] class prototypes. classes: [C] anchor classes.
        present: [K] bool, the classes that can give negatives (valid pixels in the batch).

    Returns:
        [C, K] (rows without another present class are all zero). No gradient.
    """
    with torch.no_grad():
        k = proto_mu.shape[0]
        sim = mutual_likelihood_score(proto_mu[classes], proto_var[classes], proto_mu, proto_var) / temperature
        allowed = present.unsqueeze(0) & (torch.arange(k, device=classes.device) != classes.unsqueeze(1))
        sim = sim.masked_fill(~allowed, float("-inf"))
        has = allowed.any(1, keepdim=True)
        return torch.where(has, torch.softmax(torch.where(has, sim, torch.zeros_like(sim)), 1), torch.zeros_like(sim))
