"""PRCL loss pieces as pure functions: the mutual likelihood score, distribution prototypes, the
global distribution prototype (GDP) update, virtual negatives, vectorised anchor / negative
sampling and the contrastive loss (formulas and choices: ``docs/methods/prcl.md``).

Nothing here holds state: the GDP buffers (``gdp_mu [K, D]``, ``gdp_prec [K, D]``, starting at
zero = empty) live in the method, which updates them with :func:`gdp_update` under no_grad. All
sampling is vectorised (CSR pools of pixel indices per class, one binomial chain for the
negative classes, one uniform per draw) and fully determined by a ``torch.Generator``.
"""

from __future__ import annotations

import sys
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from segproto import ops

__all__ = [
    "BatchPrototypes",
    "PRCLSample",
    "distribution_prototypes",
    "gdp_update",
    "mutual_likelihood_score",
    "mutual_likelihood_score_indexed",
    "negative_class_probs",
    "prcl_logits",
    "prcl_loss",
    "prcl_sample",
    "sample_anchors",
    "sample_negative_pixels",
    "virtual_negatives",
]

NEGATIVE_PROTOS = ("global", "batch")


def _compute_dtype(t: Tensor) -> torch.dtype:
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


class _MLS(torch.autograd.Function):
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
    dt = torch.promote_types(_compute_dtype(mu_a), _compute_dtype(mu_b))
    with torch.autocast(mu_a.device.type, enabled=False):
        ma, mb = F.normalize(mu_a.to(dt), dim=-1), F.normalize(mu_b.to(dt), dim=-1)
        va, vb = var_a.to(dt), var_b.to(dt)
        cols = mb.shape[0] if index is None else index.shape[1]
        budget = chunk_elems or _default_chunk_elems(ma.device)
        rows = max(1, budget // max(1, cols * ma.shape[1]))
        return _MLS.apply(ma, va, mb, vb, index, rows)


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


# --- distribution prototypes ------------------------------------------------------------------

class BatchPrototypes(NamedTuple):
    """Precision-weighted class distributions of one batch (rows of absent classes are zero)."""

    mu: Tensor  # [K, D] var_c * sum_i mu_i / var_i (raw mu)
    var: Tensor  # [K, D] 1 / sum_i 1 / var_i
    prec_sum: Tensor  # [K, D] sum_i 1 / var_i      (all-reduce these two under DDP,
    mu_prec_sum: Tensor  # [K, D] sum_i mu_i / var_i   then pass them to gdp_update)
    counts: Tensor  # [K] int64


def distribution_prototypes(mu: Tensor, var: Tensor, labels: Tensor, num_classes: int,
                            ignore_index: int = 255) -> BatchPrototypes:
    """Batch distribution prototypes from one ``ops.class_sums`` call on ``[1/var, mu/var]``.

    Args:
        mu, var: [N, D] pixel means and variances (> 0). labels: [N] int64.

    Returns:
        :class:`BatchPrototypes` in float32 (float64 for float64 input), differentiable w.r.t.
        mu and var.
    """
    dt = _compute_dtype(mu)
    d = mu.shape[1]
    inv = var.to(dt).reciprocal()
    sums, counts = ops.class_sums(torch.cat([inv, mu.to(dt) * inv], 1), labels, num_classes, ignore_index)
    sums = sums.to(dt)
    prec, mu_prec = sums[:, :d], sums[:, d:]
    present = (counts > 0).unsqueeze(1)
    safe = torch.where(present, prec, torch.ones_like(prec))
    zero = torch.zeros_like(prec)
    return BatchPrototypes(torch.where(present, mu_prec / safe, zero), torch.where(present, 1.0 / safe, zero),
                           prec, mu_prec, counts)


def gdp_update(mu_g: Tensor, prec_g: Tensor, sums_prec: Tensor, sums_mu_prec: Tensor,
               decay: Optional[float] = None) -> tuple[Tensor, Tensor]:
    """Bayesian precision addition of a batch into the global distribution prototypes.

    ``prec' = decay * prec + sums_prec``; ``mu' = (decay * prec * mu + sums_mu_prec) / prec'`` for
    classes with new pixels (``sums_prec > 0``); other classes keep ``mu`` (and, with a decay,
    lose precision: an unseen class slowly becomes uncertain again, never empty).
    ``decay=None`` (or 1.0) is the paper's plain addition. Buffers start EMPTY (``prec = 0``:
    the class has no GDP until it is first seen). Inputs are not modified.

    Args:
        mu_g, prec_g: [K, D] current GDP mean and per-dimension precision (1 / var_g).
        sums_prec, sums_mu_prec: [K, D] ``BatchPrototypes.prec_sum`` / ``.mu_prec_sum``
            (all-reduced under DDP). No gradient is taken.
        decay: in (0, 1], or None.

    Returns:
        (mu_g', prec_g') in the dtypes of mu_g / prec_g (computed in float64).
    """
    if decay is not None and not 0.0 < decay <= 1.0:
        raise ValueError(f"gdp_update: decay must be in (0, 1] or None, got {decay}")
    with torch.no_grad():
        mu, prec = mu_g.double(), prec_g.double()
        sp, smp = sums_prec.double(), sums_mu_prec.double()
        if decay is not None:
            prec = prec * decay
        new_prec = prec + sp
        seen = sp > 0
        new_mu = torch.where(seen, (prec * mu + smp) / torch.where(seen, new_prec, torch.ones_like(new_prec)), mu)
    return new_mu.to(mu_g.dtype), new_prec.to(prec_g.dtype)


def virtual_negatives(gdp_mu: Tensor, gdp_prec: Tensor, num_samples: int, radius: float = 1.0,
                      generator: Optional[torch.Generator] = None) -> Tensor:
    """``mu_g + radius * eps * sqrt(var_g)``, ``var_g = 1 / prec_g``, ``eps ~ N(0, I)``.

    Args:
        gdp_mu, gdp_prec: [K, D]. Classes without a GDP (``prec = 0``) get ``mu_g`` (no noise);
            mask them out (they are not negatives of anything).
        num_samples: S per class.

    Returns:
        [K, S, D] (no gradient).
    """
    with torch.no_grad():
        dt = _compute_dtype(gdp_mu)
        mu, prec = gdp_mu.to(dt), gdp_prec.to(dt)
        std = torch.where(prec > 0, prec.clamp_min(torch.finfo(dt).tiny).rsqrt(), torch.zeros_like(prec))
        eps = torch.randn((mu.shape[0], num_samples, mu.shape[1]), generator=generator, device=mu.device, dtype=dt)
        return mu.unsqueeze(1) + radius * eps * std.unsqueeze(1)


# --- vectorised sampling ----------------------------------------------------------------------

class _Pool(NamedTuple):
    """A CSR pool: the indices of the pool's pixels sorted by class (stably: increasing index within a
    class, or, with a split, the split pixels first, each part by increasing index)."""

    pixels: Tensor  # [N + 1] int64: pixels[start[c]:start[c] + count[c]] are the pixels of class c; the
    #                 masked-out pixels follow, then a guard entry N (addressable, never drawn)
    start: Tensor  # [K] int64
    count: Tensor  # [K] int64
    first: Optional[Tensor] = None  # [K] int64: how many of a block's pixels are split pixels


def _class_pool(labels: Tensor, mask: Tensor, num_classes: int, split: Optional[Tensor] = None) -> _Pool:
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
        return _Pool(order, start[:k], cnt[:k])
    first = cnt[0:2 * k:2]
    return _Pool(order, start[0:2 * k:2], first + cnt[1:2 * k:2], first)


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


def _anchors_from_pool(pool: _Pool, classes: Tensor, num_anchors: int,
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


def _anchor_pool(valid: _Pool, fallback: bool) -> _Pool:
    """The hard pool: the split prefix of every block of a pool built with ``split = probs < thr``;
    with ``fallback``, a class without hard pixels uses its whole block (all its valid pixels)."""
    count = torch.where(valid.first > 0, valid.first, valid.count) if fallback else valid.first
    return _Pool(valid.pixels, valid.start, count)


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


def _negatives_from_pool(pool: _Pool, class_probs: Tensor, num_samples: int, generator: Optional[torch.Generator],
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


# --- the loss ---------------------------------------------------------------------------------

class PRCLSample(NamedTuple):
    """Everything :func:`prcl_loss` drew, so an oracle can recompute the loss from it."""

    classes: Tensor  # [C] int64 anchor classes (ascending)
    anchors: Tensor  # [C, A] int64 pixel indices (hard pixels of the class)
    negatives: Tensor  # [C, A, M] int64 pixel indices (0 where the class has no real negative)
    negative_classes: Tensor  # [C, A, M] int64 (-1 where none)
    has_real: Tensor  # [C] bool: another class has valid pixels in the batch
    virtual: Tensor  # [C, K, V, D] virtual negatives drawn from the GDPs
    virtual_mask: Tensor  # [C, K] bool: class k has a GDP and k != classes[c]
    class_probs: Tensor  # [C, K] negative-class distribution used


def _gdp_var(gdp_prec: Tensor, dt: torch.dtype) -> tuple[Tensor, Tensor]:
    prec = gdp_prec.to(dt)
    has = (prec > 0).all(1)
    return torch.where(has.unsqueeze(1), 1.0 / torch.where(prec > 0, prec, torch.ones_like(prec)),
                       torch.ones_like(prec)), has  # placeholder var 1 where there is no GDP


def prcl_sample(mu: Tensor, var: Tensor, labels: Tensor, probs: Tensor, gdp_mu: Tensor, gdp_prec: Tensor, *,
                num_anchors: int = 256, num_negatives: int = 512, temperature: float = 100.0,
                weak_threshold: float = 0.8, num_virtual: int = 1, virtual_radius: float = 1.0,
                negative_protos: str = "global", anchor_fallback: bool = False,
                batch_protos: Optional[BatchPrototypes] = None, generator: Optional[torch.Generator] = None,
                ignore_index: int = 255) -> PRCLSample:
    """All of :func:`prcl_loss`'s random draws (arguments as there), under no_grad.

    A class takes part when it has valid pixels, a GDP (``prec > 0``), anchors (hard pixels, or
    any with ``anchor_fallback``) and at least one negative (another class in the batch, or a
    virtual negative of another class with a GDP). Draw order on ``generator``: anchors, negative
    classes, negative pixels, virtual negatives.
    """
    if negative_protos not in NEGATIVE_PROTOS:
        raise ValueError(f"prcl: negative_protos must be one of {NEGATIVE_PROTOS}, got {negative_protos!r}")
    with torch.no_grad():
        k, d = gdp_mu.shape
        dt = _compute_dtype(mu)
        dev = mu.device
        valid = labels != ignore_index
        bad = valid & ((labels < 0) | (labels >= k))
        if bool(bad.any()):
            raise ValueError(f"prcl: label {int(labels[bad][0])} is outside [0, {k}) and is not ignore_index "
                             f"({ignore_index})")
        vpool = _class_pool(labels, valid, k, split=probs < weak_threshold)  # hard pixels first
        present = vpool.count > 0
        gdp_var, has_gdp = _gdp_var(gdp_prec, dt)
        gmu = gdp_mu.to(dt)
        if negative_protos == "batch" or bool((present & ~has_gdp).any()):
            if batch_protos is None:
                batch_protos = distribution_prototypes(mu, var, labels, k, ignore_index)
            bmu, bvar = batch_protos.mu.to(dt), batch_protos.var.to(dt).clamp_min(torch.finfo(dt).tiny)
            if negative_protos == "global":  # present classes without a GDP use their batch prototype
                bmu = torch.where(has_gdp.unsqueeze(1), gmu, bmu)
                bvar = torch.where(has_gdp.unsqueeze(1), gdp_var, bvar)
            pmu, pvar = bmu, bvar
        else:
            pmu, pvar = gmu, gdp_var
        has_real = (present.sum() - present.long()) > 0  # [K]
        has_virtual = (has_gdp.sum() - has_gdp.long()) > 0 if num_virtual > 0 else torch.zeros_like(present)
        cand = torch.nonzero(present & has_gdp & (has_real | has_virtual)).squeeze(1)
        apool = _anchor_pool(vpool, anchor_fallback)
        anchors, ok = _anchors_from_pool(apool, cand, num_anchors, generator)
        classes, anchors = cand[ok], anchors[ok]
        c = classes.numel()
        cp = negative_class_probs(pmu, pvar, classes, present, temperature)  # [C, K]
        neg, neg_cls = _negatives_from_pool(vpool, cp, num_negatives, generator, fill=0,  # 0: masked
                                            repeats=num_anchors)
        neg = neg.view(c, num_anchors, num_negatives)
        virt = virtual_negatives(gdp_mu, gdp_prec, c * num_virtual, virtual_radius, generator)  # [K, C*V, D]
        virt = virt.view(k, c, num_virtual, d).transpose(0, 1).contiguous().to(dt)  # [C, K, V, D]
        vmask = has_gdp.unsqueeze(0) & (torch.arange(k, device=dev) != classes.unsqueeze(1))
        if num_virtual == 0:
            vmask = torch.zeros_like(vmask)
        return PRCLSample(classes, anchors, neg, neg_cls.view(c, num_anchors, num_negatives), has_real[classes],
                          virt, vmask, cp)


def prcl_logits(mu: Tensor, var: Tensor, gdp_mu: Tensor, gdp_prec: Tensor, sample: PRCLSample, *,
                detach_negatives: bool = True, chunk_elems: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """MLS logits (not divided by T) of every anchor against its positive and negatives.

    Columns: 0 = the class's GDP ``(mu_g, 1 / prec_g)``; ``1..M`` = the sampled pixels
    ``(mu_j, var_j)``; then ``K * V`` virtual negatives (class-major), scored as points
    (variance 0, as in the public code). Gradient flows through the anchors; the GDP and the
    virtual negatives are buffers; pixel negatives are detached unless ``detach_negatives=False``.

    Returns:
        (logits [C, A, 1 + M + K*V], mask [C, 1 + M + K*V] bool: the columns that count).
    """
    c, a = sample.anchors.shape
    m = sample.negatives.shape[2]
    _, k, v, d = sample.virtual.shape
    n = mu.shape[0]
    dt = _compute_dtype(mu)
    gdp_var, _ = _gdp_var(gdp_prec, dt)
    neg_mu, neg_var = (mu.detach(), var.detach()) if detach_negatives else (mu, var)
    bank_mu = torch.cat([neg_mu.to(dt), gdp_mu.detach().to(dt), sample.virtual.reshape(-1, d).to(dt)])
    bank_var = torch.cat([neg_var.to(dt), gdp_var, sample.virtual.new_zeros(c * k * v, d).to(dt)])
    # bank rows: [0, n) pixels | [n, n + k) GDPs | n + k + (ci * k + class) * v + draw: virtual negatives
    pos_col = (n + sample.classes).view(c, 1, 1).expand(c, a, 1)
    virt = n + k + torch.arange(c * k * v, device=mu.device).view(c, 1, k * v)
    virt_col = virt.expand(c, a, k * v)
    index = torch.cat([pos_col, sample.negatives, virt_col], 2).reshape(c * a, -1)
    flat = sample.anchors.reshape(-1)
    logits = mutual_likelihood_score_indexed(mu[flat], var[flat], bank_mu, bank_var, index, chunk_elems=chunk_elems)
    mask = torch.cat([torch.ones_like(sample.has_real).unsqueeze(1), sample.has_real.unsqueeze(1).expand(c, m),
                      sample.virtual_mask.repeat_interleave(v, dim=1)], 1)
    return logits.view(c, a, -1), mask


def prcl_loss(mu: Tensor, var: Tensor, labels: Tensor, probs: Tensor, gdp_mu: Tensor, gdp_prec: Tensor, *,
              num_anchors: int = 256, num_negatives: int = 512, temperature: float = 100.0,
              weak_threshold: float = 0.8, num_virtual: int = 1, virtual_radius: float = 1.0,
              negative_protos: str = "global", anchor_fallback: bool = False, detach_negatives: bool = True,
              batch_protos: Optional[BatchPrototypes] = None, generator: Optional[torch.Generator] = None,
              ignore_index: int = 255, chunk_elems: Optional[int] = None) -> tuple[Tensor, dict]:
    """PRCL contrastive loss: per class c taking part, ``num_anchors`` hard anchors; positive =
    the GDP of c; ``num_negatives`` pixel negatives per anchor whose classes follow
    ``softmax_{c' != c present}(MLS(proto_c, proto_c') / T)``; ``num_virtual`` virtual negatives
    per other class with a GDP; ``CE(MLS / T, target 0)`` averaged over anchors, then classes.

    Args:
        mu, var: [N, D] pixel means (raw; normalised inside the MLS) and variances in (0, 1).
        labels: [N] int64 (ground truth / confident pseudo-labels; ``ignore_index`` elsewhere).
        probs: [N] predicted probability of each pixel's label (no gradient).
        gdp_mu, gdp_prec: [K, D] GDP buffers, normally already updated with this batch
            (:func:`gdp_update`, the public code's order); ``prec = 0`` = no GDP yet.
        temperature: T of both softmaxes. Default 100, the value of every released config and
            of the public README (their ``Prcl_Loss`` constructor default, 0.5, is never used);
            with precision-weighted prototypes ``MLS / 0.5`` makes the class draw one-hot.
        weak_threshold: anchors are pixels with ``probs <`` it (the public config's
            ``strong_threshold: 0.8``).
        negative_protos: prototypes of the negative-class distribution: ``"global"`` (the GDP;
            a present class without one uses its batch prototype) or ``"batch"``.
        anchor_fallback: draw anchors from all valid pixels of a class with no hard pixel
            (default False = skip the class, as the public code does).
        detach_negatives: pixel negatives carry no gradient (the public code samples them
            under no_grad).
        batch_protos: this batch's :func:`distribution_prototypes` if already computed.
        generator: on ``mu.device``; all sampling is determined by it.
        chunk_elems: MLS working-set size (see :func:`mutual_likelihood_score`).

    Returns:
        (loss, diagnostics): loss is a scalar, ``0 * (sum mu + sum var)`` when no class takes part;
        diagnostics holds ``sample`` (:class:`PRCLSample`), ``num_classes``, ``pos_mls``,
        ``neg_mls``, ``virtual_mls`` (means, detached; NaN when there is no such column) and
        ``hard_frac`` (share of valid pixels below ``weak_threshold``).
    """
    sample = prcl_sample(mu, var, labels, probs, gdp_mu, gdp_prec, num_anchors=num_anchors,
                         num_negatives=num_negatives, temperature=temperature, weak_threshold=weak_threshold,
                         num_virtual=num_virtual, virtual_radius=virtual_radius, negative_protos=negative_protos,
                         anchor_fallback=anchor_fallback, batch_protos=batch_protos, generator=generator,
                         ignore_index=ignore_index)
    with torch.no_grad():
        valid = labels != ignore_index
        hard_frac = ((probs < weak_threshold) & valid).sum() / valid.sum().clamp_min(1)
    diag = {"sample": sample, "num_classes": sample.classes.numel(), "hard_frac": hard_frac}
    zero = (mu.sum() + var.sum()) * 0.0
    if sample.classes.numel() == 0:
        nan = zero.detach() * float("nan")
        diag.update(pos_mls=nan, neg_mls=nan, virtual_mls=nan)
        return zero, diag
    logits, mask = prcl_logits(mu, var, gdp_mu, gdp_prec, sample, detach_negatives=detach_negatives,
                               chunk_elems=chunk_elems)
    scaled = logits.div(temperature).masked_fill(~mask.unsqueeze(1), float("-inf"))
    ce = torch.logsumexp(scaled, 2) - scaled[:, :, 0]  # [C, A]
    loss = ce.mean(1).mean() + zero
    with torch.no_grad():
        m = num_negatives
        real = logits[:, :, 1:m + 1][sample.has_real]
        virt = logits[:, :, m + 1:].masked_select(mask[:, m + 1:].unsqueeze(1).expand(-1, logits.shape[1], -1))
        diag.update(pos_mls=logits[:, :, 0].mean(), neg_mls=real.mean(), virtual_mls=virt.mean())
    return loss, diag
