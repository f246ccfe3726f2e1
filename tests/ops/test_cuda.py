"""The CUDA kernels at sizes past one block / one tile, against float64 oracles computed on the CPU.

Skipped without a GPU. ``SEGPROTO_TEST_DEVICE=cpu`` runs the same checks on the CPU kernels
(to check the tests themselves on a machine without a GPU).
"""

import os

import pytest
import torch
from torch.library import opcheck

from segproto import ops
from tests.ops.conftest import TOL
from tests.ops.test_masked_cosine import oracle as cosine_oracle
from tests.ops.test_memory_bank import naive_push

DEV = os.environ.get("SEGPROTO_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")]


def class_sums64(feats, labels, k, normalize, ignore=255):
    """Per-class sums and counts in float64 on the CPU (index_add; the oracle)."""
    f, y = feats.double().cpu(), labels.cpu()
    if normalize:
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
    keep = y != ignore
    sums = torch.zeros(k, f.shape[1], dtype=torch.float64).index_add_(0, y[keep], f[keep])
    return sums, torch.bincount(y[keep], minlength=k)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_class_sums_many_rows(normalize, dtype):
    g = torch.Generator().manual_seed(3)
    n, d, k = 200_003, 64, 19  # many chunks per class; n not a multiple of any block size
    feats = torch.randn(n, d, generator=g).to(dtype)
    labels = torch.randint(0, k, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.1] = 255
    labels[labels == 7] = 255  # a class with no rows
    sums, counts = ops.class_sums(feats.to(DEV), labels.to(DEV), k, normalize=normalize)
    want_sums, want_counts = class_sums64(feats, labels, k, normalize)
    assert torch.equal(counts.cpu(), want_counts) and int(counts[7]) == 0
    # float32 accumulation of ~10^4 rows per class: error ~ sqrt(n) eps |x|.
    torch.testing.assert_close(sums.cpu().double(), want_sums, rtol=1e-4, atol=2e-3)
    again = ops.class_sums(feats.to(DEV), labels.to(DEV), k, normalize=normalize)
    assert torch.equal(again[0], sums)  # no atomics: bitwise the same on every call


def test_class_sums_gradient_matches_float64():
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(5000, 32, generator=g, dtype=torch.float64)
    feats[3] = 0  # a zero row: the clamped norm
    labels = torch.randint(0, 6, (5000,), generator=g)
    labels[::11] = 255
    upstream = torch.randn(6, 32, generator=g, dtype=torch.float64)
    x = feats.to(DEV).clone().requires_grad_(True)
    (ops.class_sums(x, labels.to(DEV), 6, normalize=True)[0] * upstream.to(DEV)).sum().backward()
    y = feats.clone().requires_grad_(True)  # the oracle's leaf
    keep = labels != 255
    yn = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
    (torch.zeros(6, 32, dtype=torch.float64).index_add(0, labels[keep], yn[keep]) * upstream).sum().backward()
    torch.testing.assert_close(x.grad.cpu(), y.grad, rtol=1e-10, atol=1e-10)


def test_prototype_update_matches_formula():
    g = torch.Generator().manual_seed(5)
    k, d, m = 12, 48, 0.9
    protos = torch.nn.functional.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    protos[2] = 0  # unset: takes the batch mean directly
    sums = torch.randn(k, d, generator=g, dtype=torch.float64)
    counts = torch.randint(0, 5, (k,), generator=g)
    counts[2], counts[5] = 3, 0  # class 5 has no rows: unchanged
    want = protos.clone()
    for c in range(k):
        if counts[c] == 0:
            continue
        mu = sums[c] / counts[c]
        mu = mu / mu.norm().clamp_min(1e-12)
        if protos[c].abs().sum() == 0:
            want[c] = mu
        else:
            v = m * protos[c] + (1 - m) * mu
            want[c] = v / v.norm().clamp_min(1e-12)
    for dtype in (torch.float64, torch.float32):
        got = protos.to(DEV, dtype).clone()
        ops.prototype_update_(got, sums.to(DEV, dtype if dtype == torch.float64 else torch.float32), counts.to(DEV), m)
        torch.testing.assert_close(got.cpu().double(), want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_memory_bank_ring_with_heavy_wraparound(dtype):
    """Several pushes where one class brings more than 3M rows at once: the last M rows win, in order."""
    g = torch.Generator().manual_seed(6)
    k, m, d = 5, 37, 24
    bank = torch.zeros(k, m, d, dtype=dtype)
    ptr, count = torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)
    want = (bank.double(), ptr.clone(), count.clone())
    gb, gp, gc = bank.to(DEV).clone(), ptr.to(DEV).clone(), count.to(DEV).clone()
    for n in (50, 3 * m + 5 + 40, 0, 700, 13):
        feats = torch.randn(n, d, generator=g).to(dtype)
        labels = torch.randint(0, k, (n,), generator=g)
        if n == 3 * m + 45:
            labels[:3 * m + 5] = 2  # one class far past M in one push
        labels[torch.rand(n, generator=g) < 0.15] = 255
        want = naive_push(*want, feats, labels)
        ops.memory_bank_push_(gb, gp, gc, feats.to(DEV), labels.to(DEV))
        torch.testing.assert_close(gb.cpu().double(), want[0], **TOL[dtype])
        assert torch.equal(gp.cpu(), want[1]) and torch.equal(gc.cpu(), want[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_cosine_past_one_tile(dtype):
    g = torch.Generator().manual_seed(7)
    b, c, lq, ls = 2, 64, 1000, 3001
    q = torch.randn(b, c, lq, generator=g).to(dtype)
    s = torch.randn(b, c, ls, generator=g).to(dtype)
    q[1, :, 17] = 0  # zero-norm query position: the eps clamp
    mask = (torch.rand(b, ls, generator=g) > 0.5).to(dtype)
    mask[0, :5] = 0.25  # soft mask values
    want = cosine_oracle(q, s, mask)
    corr = ops.masked_cosine_correlation(q.to(DEV), s.to(DEV), mask.to(DEV))
    assert corr.dtype == dtype and corr.shape == (b, lq, ls)
    torch.testing.assert_close(corr.cpu().double(), want, **TOL[dtype])
    prior = ops.masked_cosine_prior(q.to(DEV), s.to(DEV), mask.to(DEV))
    torch.testing.assert_close(prior.cpu().double(), want.amax(2), **TOL[dtype])


def test_masked_cosine_gradients_match_float64():
    g = torch.Generator().manual_seed(8)
    b, c, lq, ls = 2, 32, 300, 700
    q = torch.randn(b, c, lq, generator=g, dtype=torch.float64)
    s = torch.randn(b, c, ls, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, ls, generator=g) > 0.3).double()
    upstream = torch.randn(b, lq, ls, generator=g, dtype=torch.float64)
    qa, sa = q.clone().requires_grad_(True), s.clone().requires_grad_(True)
    (cosine_oracle(qa, sa, mask) * upstream).sum().backward()
    for dtype in (torch.float64, torch.float32):
        qd = q.to(DEV, dtype).clone().requires_grad_(True)
        sd = s.to(DEV, dtype).clone().requires_grad_(True)
        (ops.masked_cosine_correlation(qd, sd, mask.to(DEV, dtype)) * upstream.to(DEV, dtype)).sum().backward()
        tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(qd.grad.cpu().double(), qa.grad, **tol)
        torch.testing.assert_close(sd.grad.cpu().double(), sa.grad, **tol)


def test_empty_inputs():
    sums, counts = ops.class_sums(torch.zeros(0, 8, device=DEV), torch.zeros(0, dtype=torch.long, device=DEV), 3)
    assert sums.abs().sum() == 0 and counts.sum() == 0 and sums.shape == (3, 8)
    bank, ptr, count = torch.ones(3, 4, 8, device=DEV), torch.ones(3, dtype=torch.long, device=DEV), \
        torch.ones(3, dtype=torch.long, device=DEV)
    ops.memory_bank_push_(bank, ptr, count, torch.zeros(0, 8, device=DEV), torch.zeros(0, dtype=torch.long, device=DEV))
    assert bank.eq(1).all() and ptr.eq(1).all() and count.eq(1).all()
    q, s, mask = torch.randn(2, 8, 5, device=DEV), torch.randn(2, 8, 0, device=DEV), torch.zeros(2, 0, device=DEV)
    assert ops.masked_cosine_correlation(q, s, mask).shape == (2, 5, 0)
    assert ops.masked_cosine_prior(q, s, mask).eq(0).all()


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(9)
    feats = torch.randn(16, 3000, generator=g).to(DEV).t()  # [3000, 16], column-major
    labels = torch.randint(0, 4, (6000,), generator=g).to(DEV)[::2]
    sums, counts = ops.class_sums(feats, labels, 4, normalize=True)
    want_sums, want_counts = class_sums64(feats, labels, 4, True)
    assert torch.equal(counts.cpu(), want_counts)
    torch.testing.assert_close(sums.cpu().double(), want_sums, rtol=1e-5, atol=1e-4)
    q = torch.randn(2, 40, 16, generator=g).to(DEV).transpose(1, 2)  # [2, 16, 40]
    s = torch.randn(2, 16, 90, generator=g).to(DEV)[:, :, ::3]       # [2, 16, 30]
    mask = torch.ones(2, 30, device=DEV)
    torch.testing.assert_close(ops.masked_cosine_correlation(q, s, mask).cpu().double(),
                               cosine_oracle(q.cpu(), s.cpu(), mask.cpu()), rtol=1e-5, atol=1e-5)


def test_bad_labels_raise_with_the_value():
    feats = torch.randn(10, 4, device=DEV)
    labels = torch.full((10,), 9, dtype=torch.long, device=DEV)
    with pytest.raises(ValueError, match="label 9"):
        ops.class_sums(feats, labels, 6)
    bank, ptr, count = torch.zeros(6, 3, 4, device=DEV), torch.zeros(6, dtype=torch.long, device=DEV), \
        torch.zeros(6, dtype=torch.long, device=DEV)
    with pytest.raises(ValueError, match="label 9"):
        ops.memory_bank_push_(bank, ptr, count, feats, labels)
    assert bank.eq(0).all() and count.eq(0).all()  # nothing written


def test_sample_per_class_on_device():
    g = torch.Generator().manual_seed(10)
    b, n, k, v = 4, 5000, 7, 40
    labels = torch.randint(0, k, (b, n), generator=g)
    labels[1, labels[1] == 3] = 255
    labels[2, :4990] = 0  # classes with fewer than V pixels in image 2
    gen = torch.Generator(device=DEV).manual_seed(0)
    img, pix, cls = (t.cpu() for t in ops.sample_per_class(labels.to(DEV), v, k, generator=gen))
    assert torch.equal(labels[img, pix], cls)
    for i in range(b):
        for c in range(k):
            sel = (img == i) & (cls == c)
            assert int(sel.sum()) == min(int((labels[i] == c).sum()), v)
            assert pix[sel].unique().numel() == int(sel.sum())  # without replacement


def test_opcheck_on_device():
    g = torch.Generator().manual_seed(11)
    feats, labels = torch.randn(300, 8, generator=g).to(DEV), torch.randint(0, 4, (300,), generator=g).to(DEV)
    opcheck(torch.ops.segproto.class_sums.default, (feats, labels, 4, 255, True))
    sums, counts = ops.class_sums(feats, labels, 4, normalize=True)
    opcheck(torch.ops.segproto.prototype_update_.default, (torch.randn(4, 8, device=DEV), sums, counts, 0.9))
    bank = torch.zeros(4, 6, 8, device=DEV)
    ptr, count = torch.zeros(4, dtype=torch.long, device=DEV), torch.zeros(4, dtype=torch.long, device=DEV)
    opcheck(torch.ops.segproto.memory_bank_push_.default, (bank, ptr, count, feats, labels, 255))
    q = torch.randn(2, 5, 7, generator=g, dtype=torch.float64).to(DEV)
    s = torch.randn(2, 5, 9, generator=g, dtype=torch.float64).to(DEV)
    mask = (torch.rand(2, 9, generator=g) > 0.4).double().to(DEV)
    opcheck(torch.ops.segproto.masked_cosine_correlation.default, (q.requires_grad_(True), s, mask, 1e-7))
    opcheck(torch.ops.segproto.masked_cosine_prior.default, (q.detach(), s, mask, 1e-7))


def test_select_per_class_on_device():
    from segproto import _reference as ref

    g = torch.Generator().manual_seed(11)
    b, n, k, v = 3, 5000, 9, 25
    labels = torch.randint(0, k, (b, n), generator=g)
    labels[0, labels[0] == 4] = 255
    labels[2, :4980] = 1  # classes with fewer than V pixels
    keys = (torch.rand(b, n, generator=g) * 64).floor() / 64  # ties: the smaller pixel index first
    want = ref.select_per_class(labels, keys, v, k)
    for check in (True, False):
        got = ops.select_per_class(labels.to(DEV), keys.to(DEV), v, k, check=check).cpu()
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="label 12"):
        ops.select_per_class(torch.tensor([[0, 12]], device=DEV), torch.rand(1, 2, device=DEV), 2, k)
    table = ops.sample_per_class_dense(labels.to(DEV), v, k, generator=torch.Generator(device=DEV).manual_seed(0))
    table = table.cpu()
    for i in range(b):
        for c in range(k):
            row = table[i, c][table[i, c] >= 0]
            assert row.numel() == min(int((labels[i] == c).sum()), v) and row.unique().numel() == row.numel()
            assert (labels[i, row] == c).all() and (table[i, c, row.numel():] == -1).all()
