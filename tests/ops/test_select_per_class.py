"""select_per_class / sample_per_class_dense against a pair-by-pair oracle (``_reference``): the CPU
kernel, the sync-free ATen composite that runs on CUDA (exercised here on the CPU), ties, padding,
bad labels, and that CPU draws are the ones segproto made before the kernel existed."""

import pytest
import torch
from torch.library import opcheck

from segproto import _reference as ref
from segproto import ops

PATHS = {
    "kernel": lambda lab, key, v, k, ig: ops.select_per_class(lab, key, v, k, ig),
    "composite": lambda lab, key, v, k, ig: ops._select_per_class_sorted(lab, key, v, k, ig),
}


def case(seed, b=3, n=157, k=6, ignore=255, ties=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (b, n), generator=g)
    labels[torch.rand(b, n, generator=g) < 0.15] = ignore
    labels[1, labels[1] == 2] = ignore  # a class absent from one image
    labels[2, :n - 3] = 0  # classes with fewer than V pixels
    keys = torch.rand(b, n, generator=g)
    if ties:
        keys = (keys * 4).floor() / 4  # many equal keys: ties go to the smaller pixel index
    return labels, keys.to(dtype)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("v", [0, 1, 4, 200])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_pair_by_pair_oracle(path, v, ties):
    labels, keys = case(v, ties=ties)
    got = PATHS[path](labels, keys, v, 6, 255)
    assert got.shape == (3, 6, v) and got.dtype == torch.long
    assert torch.equal(got, ref.select_per_class(labels, keys, v, 6, 255))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_key_dtypes(dtype):
    labels, keys = case(1, dtype=dtype, ties=True)
    assert torch.equal(ops.select_per_class(labels, keys, 5, 6), ref.select_per_class(labels, keys, 5, 6))


@pytest.mark.parametrize("path", PATHS)
def test_ignore_index_inside_the_class_range_and_non_contiguous(path):
    labels, keys = case(2, b=4, ignore=3)
    labels, keys = labels.t().contiguous().t()[:, ::2], keys.t().contiguous().t()[:, ::2]  # strided views
    got = PATHS[path](labels, keys, 3, 6, 3)
    assert torch.equal(got, ref.select_per_class(labels, keys, 3, 6, 3))
    assert (got[:, 3] == -1).all()  # the ignored class is never drawn


def test_hand_computed_table():
    labels = torch.tensor([[1, 0, 1, 1, 255, 0]])
    keys = torch.tensor([[0.5, 0.9, 0.1, 0.5, 0.0, 0.2]])
    # class 0: pixels 1 (0.9), 5 (0.2) -> 5, 1; class 1: 0 (0.5), 2 (0.1), 3 (0.5) -> 2, 0 (tie with 3, smaller index)
    want = torch.tensor([[[5, 1], [2, 0], [-1, -1]]])
    for path in PATHS.values():
        assert torch.equal(path(labels, keys, 2, 3, 255), want)


def test_bad_labels_raise_naming_the_label():
    labels, keys = torch.tensor([[0, 1], [7, 1]]), torch.rand(2, 2)
    with pytest.raises(ValueError, match="label 7"):
        ops.select_per_class(labels, keys, 2, 3)
    with pytest.raises(ValueError, match="label -2"):
        ops.select_per_class(torch.tensor([[-2]]), torch.rand(1, 1), 1, 3)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        ops.select_per_class(labels, torch.rand(2, 3), 2, 3)
    # the unchecked composite drops them instead (never writes out of range)
    got = ops._select_per_class_sorted(labels, keys, 2, 3, 255)
    assert torch.equal(got[1, 1], torch.tensor([1, -1])) and (got >= -1).all() and (got < 2).all()


def test_empty_inputs():
    assert ops.select_per_class(torch.zeros(0, 5, dtype=torch.long), torch.rand(0, 5), 3, 4).shape == (0, 4, 3)
    assert (ops.select_per_class(torch.full((2, 4), 255), torch.rand(2, 4), 3, 4) == -1).all()
    assert ops.select_per_class(torch.full((2, 4), 255), torch.rand(2, 4), 3, 0).shape == (2, 0, 3)


def test_dense_draw_keeps_the_earlier_cpu_draws():
    """On the CPU the valid pixels take consecutive draws in flat order: the table is the selection
    on those keys, and sample_per_class is the table without its -1 entries (its earlier output)."""
    labels, _ = case(4, b=4, n=300, k=5)
    table = ops.sample_per_class_dense(labels, 7, 5, generator=torch.Generator().manual_seed(9))
    flat = labels.reshape(-1)
    keys = torch.ones(flat.shape)
    keys[flat != 255] = torch.rand(int((flat != 255).sum()), generator=torch.Generator().manual_seed(9))
    assert torch.equal(table, ref.select_per_class(labels, keys.view(labels.shape), 7, 5))
    img, pix, cls = ops.sample_per_class(labels, 7, 5, generator=torch.Generator().manual_seed(9))
    b, c, _ = torch.nonzero(table >= 0, as_tuple=True)
    assert torch.equal(img, b) and torch.equal(cls, c) and torch.equal(pix, table[table >= 0])


def test_opcheck():
    labels, keys = case(5)
    opcheck(torch.ops.segproto.select_per_class.default, (labels, keys, 4, 6, 255))
