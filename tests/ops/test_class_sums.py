"""class_sums and prototype ops against naive float64 oracles, hand tables and public-code bugs."""

import pytest
import torch
from torch.library import opcheck

from segproto import ops
from tests.ops.conftest import DTYPES, TOL, assert_close, needs_cuda, normalize64


def naive_class_sums(feats, labels, k, ignore, normalize):
    """Row-by-row loop in float64: the independent oracle."""
    sums = torch.zeros(k, feats.shape[1], dtype=torch.float64)
    counts = torch.zeros(k, dtype=torch.int64)
    for row, lab in zip(feats, labels.tolist()):
        if lab == ignore:
            continue
        sums[lab] += normalize64(row) if normalize else row.double()
        counts[lab] += 1
    return sums, counts


def make(n=300, d=7, k=5, dtype=torch.float32, ignore_frac=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g).to(dtype)
    labels = torch.randint(0, k, (n,), generator=g)
    labels[torch.rand(n, generator=g) < ignore_frac] = 255
    return feats, labels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [False, True])
def test_matches_naive_oracle(dtype, normalize):
    feats, labels = make(n=700, dtype=dtype)  # > 256 rows per class: several chunks
    labels[:600] = 2
    sums, counts = ops.class_sums(feats, labels, 5, 255, normalize)
    want_sums, want_counts = naive_class_sums(feats, labels, 5, 255, normalize)
    assert sums.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert counts.dtype == torch.int64
    assert torch.equal(counts, want_counts)
    tol = dict(TOL[dtype])
    if dtype in (torch.float16, torch.bfloat16):  # inputs are exact; only float32 accumulation errs
        tol = TOL[torch.float32]
    torch.testing.assert_close(sums.double(), want_sums, rtol=tol["rtol"], atol=tol["atol"] * 30)


def test_non_contiguous_inputs():
    feats, labels = make(n=200, d=6)
    wide = torch.randn(200, 12)
    wide[:, ::2] = feats
    strided_labels = torch.stack([labels, labels], 1)[:, 0]
    assert not wide[:, ::2].is_contiguous() and not strided_labels.is_contiguous()
    got = ops.class_sums(wide[:, ::2], strided_labels, 5)
    want = ops.class_sums(feats, labels, 5)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_empty_and_all_ignored_change_nothing():
    sums, counts = ops.class_sums(torch.randn(0, 4), torch.zeros(0, dtype=torch.long), 3)
    assert sums.shape == (3, 4) and not sums.any() and not counts.any()
    sums, counts = ops.class_sums(torch.randn(5, 4), torch.full((5,), 255), 3)
    assert not sums.any() and not counts.any()


def test_zero_row_normalizes_to_zero():
    feats = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    sums, counts = ops.class_sums(feats, torch.tensor([1, 1]), 2, normalize=True)
    torch.testing.assert_close(sums, torch.tensor([[0.0, 0.0], [0.6, 0.8]]))
    assert counts.tolist() == [0, 2]


@pytest.mark.parametrize("bad", [5, -1, 254])
def test_out_of_range_label_raises_with_value(bad):
    feats, labels = make(n=20)
    labels[7] = bad
    with pytest.raises(ValueError, match=rf"label {bad} is outside the valid range \[0, 5\)"):
        ops.class_sums(feats, labels, 5)


def test_custom_ignore_index():
    feats = torch.ones(3, 2)
    sums, counts = ops.class_sums(feats, torch.tensor([0, -1, 1]), 2, ignore_index=-1)
    assert counts.tolist() == [1, 1]
    with pytest.raises(ValueError, match="label 255"):
        ops.class_sums(feats, torch.tensor([0, 255, 1]), 2, ignore_index=-1)


def test_shape_errors_are_clear():
    with pytest.raises(RuntimeError, match="feats has 3 rows but labels has 2"):
        ops.class_sums(torch.randn(3, 2), torch.zeros(2, dtype=torch.long), 2)
    with pytest.raises(RuntimeError, match="'labels' must be int64"):
        ops.class_sums(torch.randn(3, 2), torch.zeros(3, dtype=torch.int32), 2)


def test_bitwise_deterministic_across_calls_and_threads():
    feats, labels = make(n=5000, d=64, k=7)
    first = ops.class_sums(feats, labels, 7, normalize=True)[0]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.class_sums(feats, labels, 7, normalize=True)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, ops.class_sums(feats, labels, 7, normalize=True)[0])
    assert torch.equal(first, single)


def test_region_means_via_flattened_keys():
    """Per-(image, class) sums with labels b * K + c, as ops.md section 1 documents."""
    b, k = 3, 4
    feats = torch.randn(b, 50, 5)
    labels = torch.randint(0, k, (b, 50))
    keys = (torch.arange(b)[:, None] * k + labels).reshape(-1)
    sums, counts = ops.class_sums(feats.reshape(-1, 5), keys, b * k)
    for bi in range(b):
        for c in range(k):
            sel = labels[bi] == c
            torch.testing.assert_close(sums[bi * k + c], feats[bi][sel].sum(0), rtol=1e-5, atol=1e-5)
            assert counts[bi * k + c] == sel.sum()


def test_prototype_update_hand_table():
    protos = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    sums = torch.tensor([[0.0, 2.0], [3.0, 4.0], [9.0, 9.0]])
    counts = torch.tensor([2, 1, 0])
    ops.prototype_update_(protos, sums, counts, 0.5)
    r = 0.5**0.5
    # class 0: mu = (0, 1); normalize(0.5 * (1, 0) + 0.5 * (0, 1)) = (r, r)
    # class 1: never set -> mu = (0.6, 0.8);  class 2: count 0 -> unchanged
    torch.testing.assert_close(protos, torch.tensor([[r, r], [0.6, 0.8], [0.0, 1.0]]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_prototype_momentum_update_matches_formula(dtype):
    k, d = 6, 16
    protos = torch.nn.functional.normalize(torch.randn(k, d), dim=1).to(dtype)
    protos[1] = 0  # unset prototype
    feats, labels = make(n=400, d=d, k=k, dtype=dtype)
    labels[labels == 4] = 255  # class 4 absent: must stay bitwise identical
    before = protos.clone()
    ops.prototype_momentum_update_(protos, feats, labels, 0.9)
    sums, counts = naive_class_sums(feats, labels, k, 255, normalize=True)
    want = before.double().clone()
    for c in range(k):
        if counts[c] == 0:
            continue
        mu = normalize64(sums[c] / counts[c])
        want[c] = mu if not before[c].any() else normalize64(0.9 * before[c].double() + 0.1 * mu)
    assert torch.equal(protos[4], before[4])
    assert_close(protos, want, dtype)


def test_prototype_update_class_zero_is_updated():
    """Public-code bug: class 0 was silently skipped."""
    protos = torch.zeros(3, 2)
    ops.prototype_momentum_update_(protos, torch.tensor([[2.0, 0.0]]), torch.tensor([0]), 0.9)
    assert protos[0].tolist() == [1.0, 0.0]


def test_opcheck():
    feats, labels = make(n=64, d=8, k=4)
    opcheck(torch.ops.segproto.class_sums.default, (feats, labels, 4, 255, True))
    protos = torch.randn(4, 8)
    sums, counts = ops.class_sums(feats, labels, 4, normalize=True)
    opcheck(torch.ops.segproto.prototype_update_.default, (protos, sums, counts, 0.9))


def test_compile_fullgraph():
    feats, labels = make(n=64, d=8, k=4)
    protos = torch.zeros(4, 8)

    def step(f, y, p):
        sums, counts = ops.class_sums(f, y, 4, normalize=True)
        ops.prototype_update_(p, sums, counts, 0.9)
        return sums.sum() + counts.sum()

    expected_protos = protos.clone()
    expected = step(feats, labels, expected_protos)
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(feats, labels, protos)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(protos, expected_protos)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    feats, labels = make(n=3000, d=32, k=6, dtype=dtype)
    cpu = ops.class_sums(feats, labels, 6, normalize=True)
    gpu = ops.class_sums(feats.cuda(), labels.cuda(), 6, normalize=True)
    assert torch.equal(gpu[1].cpu(), cpu[1])
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-5, atol=1e-4)
    again = ops.class_sums(feats.cuda(), labels.cuda(), 6, normalize=True)
    assert torch.equal(gpu[0], again[0])
    protos_c, protos_g = torch.zeros(6, 32, dtype=dtype), torch.zeros(6, 32, dtype=dtype, device="cuda")
    ops.prototype_update_(protos_c, *cpu, 0.9)
    ops.prototype_update_(protos_g, *gpu, 0.9)
    torch.testing.assert_close(protos_g.cpu().double(), protos_c.double(), **TOL[dtype])
    with pytest.raises(ValueError, match="label 9"):
        ops.class_sums(feats.cuda(), torch.full_like(labels, 9).cuda(), 6)
