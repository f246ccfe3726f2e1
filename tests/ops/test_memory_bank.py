"""memory_bank_push_ and sample_per_class against a row-by-row ring-buffer oracle and the
public-code bugs ops.md lists."""

import pytest
import torch
from torch.library import opcheck

from segproto import ops
from tests.ops.conftest import DTYPES, TOL, needs_cuda, normalize64


def naive_push(bank, ptr, count, feats, labels, ignore=255):
    """One row at a time, exactly as a ring buffer is described: the independent oracle."""
    bank, ptr, count = bank.double().clone(), ptr.clone(), count.clone()
    m = bank.shape[1]
    for row, c in zip(feats, labels.tolist()):
        if c == ignore:
            continue
        bank[c, ptr[c]] = normalize64(row)
        ptr[c] = (ptr[c] + 1) % m
        count[c] = min(int(count[c]) + 1, m)
    return bank, ptr, count


def empty_bank(k=4, m=5, d=3, dtype=torch.float32):
    return torch.zeros(k, m, d, dtype=dtype), torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_row_by_row_oracle_over_several_pushes(dtype):
    g = torch.Generator().manual_seed(0)
    bank, ptr, count = empty_bank(k=4, m=5, d=6, dtype=dtype)
    want = (bank.double(), ptr.clone(), count.clone())
    for n in (3, 9, 0, 14, 2):  # includes n > M for some classes and wrap-around
        feats = torch.randn(n, 6, generator=g).to(dtype)
        labels = torch.randint(0, 4, (n,), generator=g)
        labels[torch.rand(n, generator=g) < 0.2] = 255
        want = naive_push(*want, feats, labels)
        ops.memory_bank_push_(bank, ptr, count, feats, labels)
        torch.testing.assert_close(bank.double(), want[0], **TOL[dtype])
        assert torch.equal(ptr, want[1]) and torch.equal(count, want[2])


def test_pointer_advances_by_n_not_one():
    """Public-code bug: the pointer advanced by 1 per push instead of by the rows pushed."""
    bank, ptr, count = empty_bank(k=2, m=10, d=2)
    ops.memory_bank_push_(bank, ptr, count, torch.randn(4, 2), torch.tensor([1, 1, 1, 1]))
    assert ptr.tolist() == [0, 4] and count.tolist() == [0, 4]


def test_only_last_m_rows_survive_in_order():
    bank, ptr, count = empty_bank(k=1, m=3, d=2)
    feats = torch.tensor([[float(i), 1.0] for i in range(1, 6)])  # 5 rows into 3 slots
    ops.memory_bank_push_(bank, ptr, count, feats, torch.zeros(5, dtype=torch.long))
    # rows 0..4 go to slots 0,1,2,0,1: slot 0 = row 3, slot 1 = row 4, slot 2 = row 2
    expect = torch.stack([normalize64(feats[3]), normalize64(feats[4]), normalize64(feats[2])]).float()
    torch.testing.assert_close(bank[0], expect)
    assert ptr.tolist() == [2] and count.tolist() == [3]


def test_class_zero_is_pushed():
    """Public-code bug: class 0 was skipped."""
    bank, ptr, count = empty_bank()
    ops.memory_bank_push_(bank, ptr, count, torch.tensor([[0.0, 3.0, 4.0]]), torch.tensor([0]))
    torch.testing.assert_close(bank[0, 0], torch.tensor([0.0, 0.6, 0.8]))
    assert count.tolist() == [1, 0, 0, 0]


def test_count_marks_only_written_slots():
    """Public-code bug: never-written (random) slots were used as negatives. `count` says how many
    leading slots are real; unwritten slots stay zero."""
    bank, ptr, count = empty_bank(k=3, m=6, d=2)
    ops.memory_bank_push_(bank, ptr, count, torch.randn(2, 2), torch.tensor([2, 2]))
    assert count.tolist() == [0, 0, 2]
    assert not bank[2, 2:].any() and not bank[:2].any()


def test_bad_label_raises_and_changes_nothing():
    bank, ptr, count = empty_bank()
    bank += 1
    before = (bank.clone(), ptr.clone(), count.clone())
    with pytest.raises(ValueError, match=r"label 4 is outside the valid range \[0, 4\)"):
        ops.memory_bank_push_(bank, ptr, count, torch.randn(3, 3), torch.tensor([0, 4, 1]))
    assert torch.equal(bank, before[0]) and torch.equal(ptr, before[1]) and torch.equal(count, before[2])


def test_mixed_dtypes_and_noncontiguous_feats():
    bank, ptr, count = empty_bank(d=4)
    feats = torch.randn(4, 8, dtype=torch.float64)[:, ::2]
    labels = torch.tensor([0, 1, 1, 3])
    want = naive_push(bank, ptr, count, feats, labels)
    ops.memory_bank_push_(bank, ptr, count, feats, labels)
    torch.testing.assert_close(bank.double(), want[0], rtol=1e-6, atol=1e-6)


def test_shape_errors_are_clear():
    bank, ptr, count = empty_bank(d=3)
    with pytest.raises(RuntimeError, match="feats has D=2 but the bank has D=3"):
        ops.memory_bank_push_(bank, ptr, count, torch.randn(1, 2), torch.tensor([0]))


def test_opcheck_and_compile():
    bank, ptr, count = empty_bank(k=3, m=4, d=5)
    feats, labels = torch.randn(7, 5), torch.tensor([0, 1, 2, 255, 1, 1, 0])
    opcheck(torch.ops.segproto.memory_bank_push_.default, (bank.clone(), ptr.clone(), count.clone(), feats, labels, 255))

    def push(b, p, c, f, y):
        ops.memory_bank_push_(b, p, c, f, y)
        return c.sum()

    want = naive_push(bank, ptr, count, feats, labels)
    torch.compile(push, fullgraph=True, backend="aot_eager")(bank, ptr, count, feats, labels)
    torch.testing.assert_close(bank.double(), want[0], rtol=1e-6, atol=1e-6)
    assert torch.equal(count, want[2])


# ------------------------------------------------------------------------- sample_per_class
def test_sampler_counts_classes_and_distinctness():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (4, 300), generator=g)
    labels[:, :50] = 255
    labels[2] = 1  # image 2 has one class only
    img, pix, cls = ops.sample_per_class(labels, 10, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels[img, pix], cls)
    pairs = {(int(b), int(p)) for b, p in zip(img, pix)}
    assert len(pairs) == len(img)  # no pixel twice
    for b in range(4):
        for c in range(5):
            n = int((labels[b] == c).sum())
            assert int(((img == b) & (cls == c)).sum()) == min(n, 10)


def test_sampler_is_seeded_and_uniform():
    labels = torch.zeros(1, 12, dtype=torch.long)
    draw = lambda s: ops.sample_per_class(labels, 3, 1, generator=torch.Generator().manual_seed(s))[1]
    assert torch.equal(draw(7), draw(7)) and not torch.equal(draw(7), draw(8))
    hits = torch.zeros(12)
    trials = 3000
    for s in range(trials):
        hits[draw(s)] += 1
    expected = trials * 3 / 12  # 750 per pixel; binomial sd ~ 23.7
    assert (hits - expected).abs().max() < 5 * (trials * 0.25 * 0.75) ** 0.5


def test_sampler_rejects_bad_labels():
    with pytest.raises(ValueError, match="label 9"):
        ops.sample_per_class(torch.tensor([[0, 9]]), 2, 3)


@needs_cuda
def test_cuda_push_matches_cpu():
    g = torch.Generator().manual_seed(1)
    feats, labels = torch.randn(500, 16, generator=g), torch.randint(0, 6, (500,), generator=g)
    cpu = empty_bank(k=6, m=40, d=16)
    gpu = tuple(t.cuda() for t in empty_bank(k=6, m=40, d=16))
    ops.memory_bank_push_(*cpu, feats, labels)
    ops.memory_bank_push_(*gpu, feats.cuda(), labels.cuda())
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-6, atol=1e-6)
    assert torch.equal(gpu[1].cpu(), cpu[1]) and torch.equal(gpu[2].cpu(), cpu[2])
