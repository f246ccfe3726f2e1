"""What, besides code, config, seed and thread count, decides the floating-point results of a run.

A seeded CPU run reproduces bitwise on the same machine. On a CPU whose instruction set differs,
torch's CPU kernels take other code paths (``torch.backends.cpu.get_cpu_capability()``: ``AVX2``,
``AVX512``, ...) and round differently, so the weights differ from the first iterations
(``benchmarks/isa_reproducibility.py``). The trainer prints :func:`machine_info` in ``train.log``
and the study scripts keep it beside every run.
"""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

PACKAGES = ("torch", "numpy", "timm", "pillow")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """``{"cpu", "torch_cpu_capability", "torch", "numpy", "timm", "pillow"}`` (a package that is
    not installed is ``None``)."""
    import torch

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"cpu": cpu_model(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{name: version(name) for name in PACKAGES}}


def format_machine(info: dict) -> str:
    """One line: ``cpu AMD EPYC (torch CPU kernels AVX512); torch 2.14.1, numpy 2.4.6, ...``."""
    versions = ", ".join(f"{k} {info[k]}" for k in PACKAGES if info.get(k))
    return f"cpu {info['cpu']} (torch CPU kernels {info['torch_cpu_capability']}); {versions}"
