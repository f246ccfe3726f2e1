"""Shared fixtures: one small generated synthetic dataset per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from segproto.data import generate_synthetic

SMALL = dict(num_train=160, num_val=8, num_test=8, image_size=128, seed=0)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated dataset shared (read-only!) by the tests that only read it."""
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "ds", **SMALL)
