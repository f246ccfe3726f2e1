"""``segproto.utils.env``: the machine facts that decide a CPU run's rounding."""

import importlib.metadata

import torch

from segproto.utils import env


def test_machine_info_names_the_kernel_set_and_versions(monkeypatch):
    monkeypatch.setattr(env, "PACKAGES", ("torch", "numpy", "no-such-distribution-xyz"))
    info = env.machine_info()
    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch"] == importlib.metadata.version("torch") and torch.__version__.startswith(info["torch"])
    assert info["numpy"] == importlib.metadata.version("numpy")
    assert info["no-such-distribution-xyz"] is None
    assert isinstance(info["cpu"], str) and info["cpu"]


def test_cpu_model_reads_proc_cpuinfo(monkeypatch, tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU 9000 @ 2.0GHz\nflags\t: fpu\n")
    real = env.Path
    monkeypatch.setattr(env, "Path", lambda p: fake if p == "/proc/cpuinfo" else real(p))
    assert env.cpu_model() == "Example CPU 9000 @ 2.0GHz"
    monkeypatch.setattr(env, "Path", lambda p: tmp_path / "missing")
    monkeypatch.setattr(env.platform, "processor", lambda: "")
    monkeypatch.setattr(env.platform, "machine", lambda: "x86_64")
    assert env.cpu_model() == "x86_64"


def test_format_machine_leaves_out_missing_packages():
    info = {"cpu": "Example CPU", "torch_cpu_capability": "AVX2", "torch": "2.14.1", "numpy": "2.4.6",
            "timm": None, "pillow": "13.0.0"}
    assert env.format_machine(info) == ("cpu Example CPU (torch CPU kernels AVX2); torch 2.14.1, numpy 2.4.6, "
                                        "pillow 13.0.0")
