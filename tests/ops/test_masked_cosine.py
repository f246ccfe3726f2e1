"""masked_cosine_correlation / masked_cosine_prior against the float64 formula of ops.md."""

import pytest
import torch
from torch.autograd import gradcheck
from torch.library import opcheck

from segproto import ops
from tests.ops.conftest import DTYPES, TOL, assert_close, needs_cuda


def oracle(q, s, mask, eps=1e-7):
    """corr[b, i, j] = mask[b, j] <q, s> / (max(|q|, eps) max(|s|, eps)), elementwise in float64."""
    q, s, mask = q.double(), s.double(), mask.double()
    dots = torch.einsum("bci,bcj->bij", q, s)
    nq = q.norm(dim=1).clamp_min(eps)[:, :, None]
    ns = s.norm(dim=1).clamp_min(eps)[:, None, :]
    return mask[:, None, :] * dots / (nq * ns)


def make(b=2, c=5, lq=7, ls=9, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, c, lq, generator=g).to(dtype)
    s = torch.randn(b, c, ls, generator=g).to(dtype)
    mask = (torch.rand(b, ls, generator=g) > 0.4).to(dtype)
    mask[0, 0] = 0.5  # soft values are allowed
    return q, s, mask


@pytest.mark.parametrize("dtype", DTYPES)
def test_correlation_matches_oracle(dtype):
    q, s, mask = make(dtype=dtype)
    q[0, :, 1] = 0  # zero-norm query column
    out = ops.masked_cosine_correlation(q, s, mask)
    assert out.dtype == dtype and out.shape == (2, 7, 9)
    assert_close(out, oracle(q, s, mask), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prior_matches_dense_max(dtype):
    q, s, mask = make(dtype=dtype)
    out = ops.masked_cosine_prior(q, s, mask)
    assert out.dtype == dtype and out.shape == (2, 7)
    assert_close(out, oracle(q, s, mask).amax(dim=2), dtype)


def test_prior_over_several_tiles():
    # 1 x 2048 x 4096 scores exceed the 4M-element tile budget: two query tiles in the kernel.
    q, s, mask = make(b=1, c=4, lq=2048, ls=4096, seed=1)
    torch.testing.assert_close(ops.masked_cosine_prior(q, s, mask).double(), oracle(q, s, mask).amax(2),
                               rtol=1e-5, atol=1e-5)


def test_prior_rejects_grad_and_handles_empty():
    q, s, mask = make()
    q.requires_grad_(True)
    with pytest.raises(RuntimeError, match="no gradient"):
        ops.masked_cosine_prior(q, s, mask)
    with torch.no_grad():
        assert ops.masked_cosine_prior(q, s, mask).shape == (2, 7)
    assert torch.equal(ops.masked_cosine_prior(q.detach(), s[:, :, :0], mask[:, :0]), torch.zeros(2, 7))


def test_non_contiguous_inputs():
    q, s, mask = make(lq=6, ls=8)
    qn = q.transpose(1, 2).contiguous().transpose(1, 2)
    sw = torch.randn(2, 5, 16)
    sw[:, :, ::2] = s
    assert not qn.is_contiguous() and not sw[:, :, ::2].is_contiguous()
    torch.testing.assert_close(ops.masked_cosine_correlation(qn, sw[:, :, ::2], mask).double(), oracle(q, s, mask),
                               rtol=1e-5, atol=1e-5)


def test_all_zero_mask_gives_zeros():
    q, s, mask = make()
    assert not ops.masked_cosine_correlation(q, s, torch.zeros_like(mask)).any()


def test_gradcheck_float64_including_zero_norm_and_zero_mask():
    q, s, mask = make(b=2, c=3, lq=4, ls=5, dtype=torch.float64)
    q[1, :, 2] = 0  # zero-norm columns: the clamped branch (eps large enough for finite differences)
    s[0, :, 3] = 0
    q.requires_grad_(True)
    s.requires_grad_(True)
    assert gradcheck(lambda a, b: ops.masked_cosine_correlation(a, b, mask, 1e-3), (q, s))
    assert gradcheck(lambda a, b: ops.masked_cosine_correlation(a, b, torch.zeros_like(mask)), (q, s))


def test_backward_matches_autograd_of_oracle():
    q, s, mask = make(dtype=torch.float32)
    grad = torch.randn(2, 7, 9, dtype=torch.float64)
    qa, sa = q.double().requires_grad_(True), s.double().requires_grad_(True)
    (oracle(qa, sa, mask) * grad).sum().backward()
    qb, sb = q.clone().requires_grad_(True), s.clone().requires_grad_(True)
    (ops.masked_cosine_correlation(qb, sb, mask) * grad.float()).sum().backward()
    torch.testing.assert_close(qb.grad.double(), qa.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sb.grad.double(), sa.grad, rtol=1e-4, atol=1e-5)


def test_deterministic():
    q, s, mask = make(b=2, c=64, lq=300, ls=400)
    assert torch.equal(ops.masked_cosine_correlation(q, s, mask), ops.masked_cosine_correlation(q, s, mask))
    assert torch.equal(ops.masked_cosine_prior(q, s, mask), ops.masked_cosine_prior(q, s, mask))


def test_shape_errors_are_clear():
    q, s, mask = make()
    with pytest.raises(RuntimeError, match=r"mask must have shape \[2, 9\]"):
        ops.masked_cosine_correlation(q, s, mask[:, :3])
    with pytest.raises(RuntimeError, match="same dtype"):
        ops.masked_cosine_correlation(q, s.double(), mask)


def test_opcheck():
    q, s, mask = make(dtype=torch.float64)
    opcheck(torch.ops.segproto.masked_cosine_correlation.default, (q.requires_grad_(True), s, mask, 1e-7))
    opcheck(torch.ops.segproto.masked_cosine_prior.default, (q.detach(), s, mask, 1e-7))


def test_compile_fullgraph_forward_and_backward():
    q, s, mask = make()

    def f(a, b):
        return ops.masked_cosine_correlation(a, b, mask).square().sum()

    qa, sa = q.clone().requires_grad_(True), s.clone().requires_grad_(True)
    f(qa, sa).backward()
    qb, sb = q.clone().requires_grad_(True), s.clone().requires_grad_(True)
    torch.compile(f, fullgraph=True, backend="aot_eager")(qb, sb).backward()
    torch.testing.assert_close(qb.grad, qa.grad)
    torch.testing.assert_close(sb.grad, sa.grad)


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    q, s, mask = make(b=2, c=32, lq=50, ls=70, dtype=dtype)
    dev = [t.cuda() for t in (q, s, mask)]
    torch.testing.assert_close(ops.masked_cosine_correlation(*dev).cpu().double(), oracle(q, s, mask), **TOL[dtype])
    torch.testing.assert_close(ops.masked_cosine_prior(*dev).cpu().double(), oracle(q, s, mask).amax(2), **TOL[dtype])
    qg, sg = dev[0].double().requires_grad_(True), dev[1].double().requires_grad_(True)
    assert gradcheck(lambda a, b: ops.masked_cosine_correlation(a, b, dev[2].double(), 1e-3), (qg, sg))
