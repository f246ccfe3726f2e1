"""prcl_negatives_ (the PRCL sampler's pixel pass) against a draw-by-draw oracle, and the sampler
with and without the compiled kernel."""

import pytest
import torch
from torch.library import opcheck

from segproto import _reference as ref
from segproto import ops

LOW = (1 << 31) - 1
HAS_KERNEL = ops.has_prcl_negatives_kernel(torch.empty(0))
IMPLS = [pytest.param(ref.prcl_negatives_, id="reference"),
         pytest.param(lambda *a: torch.ops.segproto.prcl_negatives_(*a), id="compiled",
                      marks=pytest.mark.skipif(not HAS_KERNEL, reason="segproto._C not loaded"))]


def oracle(counts, words, pixels, start, count, m, fill):
    """One draw at a time, as the contract reads: class runs in class order, v = (w + 1) mod 2^31,
    offset (v * n) >> 31, suspect when (v * n) mod 2^31 < n."""
    r, k = counts.shape
    pix, cls, sus = [[fill] * m for _ in range(r)], [[-1] * m for _ in range(r)], []
    for row in range(r):
        pos = 0
        for c in range(k):
            for _ in range(int(counts[row, c])):
                v = (int(words[row * m + pos]) + 1) % (1 << 31)
                n = int(count[c])
                prod = v * n
                if prod % (1 << 31) < n:
                    sus.append(row * m + pos)
                pix[row][pos] = int(pixels[int(start[c]) + (prod >> 31)])
                cls[row][pos] = c
                pos += 1
    return pix, cls, sus


def case(seed=0, r=9, m=40, k=5):
    g = torch.Generator().manual_seed(seed)
    count = torch.tensor([3, 0, 1, 70, 2])[:k]  # class 1 has no pixel
    start = torch.cumsum(count, 0) - count
    pixels = torch.randperm(int(count.sum()) + 10, generator=g)[: int(count.sum())]
    counts = torch.zeros(r, k, dtype=torch.long)
    for row in range(r):
        if row == 4:
            continue  # a row without mass
        p = torch.tensor([1.0, 0.0, 1.0, 3.0, 1.0])[:k]
        counts[row] = torch.bincount(torch.multinomial(p, m, replacement=True, generator=g), minlength=k)
    words = torch.randint(0, 1 << 31, (r * m,), generator=g, dtype=torch.int32)
    words[[0, 7, 100]] = torch.tensor([LOW, 0, 715827882], dtype=torch.int32)  # v = 0; v = 1; a suspect for n = 3
    return counts, words, pixels, start, count


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_draw_by_draw_oracle(impl, seed):
    counts, words, pixels, start, count = case(seed)
    r, m = counts.shape[0], 40
    pix, cls = torch.empty(r, m, dtype=torch.long), torch.empty(r, m, dtype=torch.long)
    sus = impl(pix, cls, counts, words, pixels, start, count, -7)
    want = oracle(counts, words, pixels, start, count, m, -7)
    assert pix.tolist() == want[0] and cls.tolist() == want[1] and sus.tolist() == want[2]
    assert len(want[2]) >= 1 and (pix[4] == -7).all() and (cls[4] == -1).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_counts_are_refused(impl):
    counts, words, pixels, start, count = case()
    pix, cls = torch.empty(9, 40, dtype=torch.long), torch.empty(9, 40, dtype=torch.long)
    short = counts.clone()
    short[2, 0] -= 1  # row 2 sums to 39
    with pytest.raises(RuntimeError, match="row 2 of 'counts' does not sum to M = 40"):
        impl(pix, cls, short, words, pixels, start, count, 0)
    empty_class = counts.clone()
    empty_class[3, 1], empty_class[3, 3] = 1, empty_class[3, 3] - 1  # a draw of class 1, which has no pixel
    with pytest.raises(RuntimeError, match="row 3 of 'counts'"):
        impl(pix, cls, empty_class, words, pixels, start, count, 0)


@pytest.mark.skipif(not HAS_KERNEL, reason="segproto._C not loaded")
def test_opcheck():
    counts, words, pixels, start, count = case()
    pix, cls = torch.empty(9, 40, dtype=torch.long), torch.empty(9, 40, dtype=torch.long)
    opcheck(torch.ops.segproto.prcl_negatives_.default, (pix, cls, counts, words, pixels, start, count, 0),
            test_utils=("test_schema", "test_faketensor"))


@pytest.mark.skipif(not HAS_KERNEL, reason="segproto._C not loaded")
@pytest.mark.parametrize("repeats, chunk", [(1, None), (3, None), (3, 1500)])
def test_sampler_draws_are_bitwise_those_of_the_pytorch_path(monkeypatch, repeats, chunk):
    """Same generator, same draws: the compiled pass only fuses the PyTorch path's work, and its
    row blocks (``chunk`` draws, here 2 rows) do not change them."""
    from segproto.losses import prcl as P

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (5000,), generator=g)
    labels[torch.rand(5000, generator=g) < 0.1] = 255
    labels[labels == 4] = 255  # class 4 has no pixel
    probs = torch.rand(7, 6, generator=g, dtype=torch.float64)
    probs[3] = 0  # a row without mass
    pool = P._class_pool(labels, labels != 255, 6)
    fast = P._negatives_from_pool(pool, probs, 700, torch.Generator().manual_seed(5), repeats=repeats,
                                  chunk_elems=chunk)
    monkeypatch.setattr(P.ops, "has_prcl_negatives_kernel", lambda t: False)
    slow = P._negatives_from_pool(pool, probs, 700, torch.Generator().manual_seed(5), repeats=repeats)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    assert (fast[0][3 * repeats] == -1).all()
