"""Build info, the import-time version check, and the pure-PyTorch fallback."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from segproto import ops


def test_build_info_fields():
    info = ops.build_info()
    assert {"extension", "cuda", "torch", "cuda_version", "arch_list"} <= set(info)
    assert isinstance(info["extension"], bool) and isinstance(info["cuda"], bool)
    if os.environ.get("SEGPROTO_REQUIRE_EXT") == "1":
        assert info["extension"] and info["torch"] == torch.__version__ and info["error"] is None
    if info["cuda"]:
        assert info["cuda_version"] == torch.version.cuda and info["arch_list"]


def _run(code, **env):
    full_env = {**os.environ, **env}
    full_env.pop("SEGPROTO_REQUIRE_EXT", None) if "SEGPROTO_REQUIRE_EXT" not in env else None
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env)


MISMATCH = """
    import warnings, torch
    torch.__version__ = "0.0.1"            # pretend the runtime torch differs from the build's
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        from segproto import ops
        import segproto.ops                # a second import must not warn again
    print(len(w), str(w[0].message))
    f = torch.randn(6, 3); y = torch.tensor([0, 1, 1, 255, 0, 2])
    print(ops.build_info()["extension"], ops.class_sums(f, y, 3)[1].tolist())
"""


@pytest.mark.skipif(not ops.build_info()["extension"], reason="extension not built")
def test_version_mismatch_warns_once_and_falls_back():
    out = _run(MISMATCH)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first.startswith("1 segproto._C was built against torch") and "but torch 0.0.1 is installed" in first
    assert second == "False [2, 2, 1]"


@pytest.mark.skipif(not ops.build_info()["extension"], reason="extension not built")
def test_version_mismatch_is_an_error_when_extension_required():
    out = _run(MISMATCH, SEGPROTO_REQUIRE_EXT="1")
    assert out.returncode != 0
    assert "SEGPROTO_REQUIRE_EXT is set and segproto._C was built against torch" in out.stderr


@pytest.mark.skipif(not ops.build_info()["extension"], reason="extension not built")
def test_fallback_matches_extension(monkeypatch):
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(200, 8, generator=g), torch.randint(0, 4, (200,), generator=g)
    q, s, mask = torch.randn(2, 8, 10, generator=g), torch.randn(2, 8, 12, generator=g), torch.rand(2, 12, generator=g)

    def run_all():
        bank, ptr, count = torch.zeros(4, 30, 8), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
        ops.memory_bank_push_(bank, ptr, count, feats, labels)
        protos = torch.zeros(4, 8)
        ops.prototype_momentum_update_(protos, feats, labels, 0.9)
        return [*ops.class_sums(feats, labels, 4), bank, ptr, count, protos,
                ops.masked_cosine_correlation(q, s, mask), ops.masked_cosine_prior(q, s, mask)]

    compiled = run_all()
    monkeypatch.setattr(ops, "_EXT", False)
    for got, want in zip(run_all(), compiled):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
