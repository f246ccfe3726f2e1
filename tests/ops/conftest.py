"""Shared helpers for the op tests: devices, dtypes and their tolerances, naive oracles."""

import pytest
import torch

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

# Storage dtypes and the tolerances of results compared with the float64 oracle.
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}


def assert_close(actual, expected, dtype):
    torch.testing.assert_close(actual.double(), expected.double(), **TOL[dtype])


def normalize64(x, eps=1e-12):
    """Row-wise L2 normalisation in float64 of a plain list-of-floats row."""
    x = x.double()
    return x / max(float(x.norm()), eps)
