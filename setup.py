"""Build script for segproto's compiled ops (``segproto._C``).

Install after PyTorch, without build isolation (torch is NOT a build requirement: an isolated
build would download a second multi-GB torch)::

    pip install --no-build-isolation -e .

Environment:
    SEGPROTO_CPU_ONLY=1     build only the CPU kernels.
    SEGPROTO_FORCE_CUDA=1   build the CUDA kernels even when torch cannot see a GPU
                            (needs nvcc and a CUDA build of torch).
    TORCH_CUDA_ARCH_LIST    CUDA archs; default when no GPU is visible: see DEFAULT_ARCHS.
    MAX_JOBS                parallel compile jobs (ninja).
"""

import glob
import json
import os
import shutil
import sys

from setuptools import find_packages, setup


# torch derives CUDA_HOME from the nvcc on PATH, which may be a wrapper script outside the toolkit
# (/usr/local/bin/nvcc -> CUDA_HOME=/usr/local, where libcudart is missing). Pick a real toolkit.
def _find_cuda_home():
    nvcc = shutil.which("nvcc")
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates += sorted(glob.glob("/usr/local/cuda*"))
    for home in candidates:
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH") and _find_cuda_home():
    os.environ["CUDA_HOME"] = _find_cuda_home()

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    sys.exit(
        "segproto: PyTorch must be installed before building segproto (it is not a build "
        "requirement). Install torch first, e.g. `pip install torch==2.14.1`, then run "
        "`pip install --no-build-isolation -e .`."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
# sm_75 (T4), sm_80 (A100; its SASS also runs on sm_86/sm_89), sm_90 (H100), and PTX for newer GPUs.
DEFAULT_ARCHS = "7.5;8.0;9.0+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


def _want_cuda() -> bool:
    if _flag("SEGPROTO_CPU_ONLY"):
        return False
    has_toolkit = CUDA_HOME is not None and torch.version.cuda is not None
    if _flag("SEGPROTO_FORCE_CUDA"):
        if not has_toolkit:
            sys.exit(
                "segproto: SEGPROTO_FORCE_CUDA=1 but "
                + ("no CUDA toolkit (nvcc) was found" if CUDA_HOME is None else "torch is a CPU-only build")
                + "; install the CUDA toolkit and a CUDA build of torch, or unset it."
            )
        return True
    return has_toolkit


def _arch_list(with_cuda: bool) -> str:
    if not with_cuda:
        return ""
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS
    return os.environ.get("TORCH_CUDA_ARCH_LIST", "")  # empty: torch picks the visible GPUs' archs


def _write_build_info(with_cuda: bool, archs: str) -> None:
    info = {
        "torch": torch.__version__,
        "cuda": with_cuda,
        "cuda_version": torch.version.cuda if with_cuda else None,
        "arch_list": archs if with_cuda else None,
    }
    with open(os.path.join(ROOT, "segproto", "_build_info.json"), "w") as f:
        json.dump(info, f, indent=2)


def _extension():
    with_cuda = _want_cuda()
    archs = _arch_list(with_cuda)
    _write_build_info(with_cuda, archs)
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/common/*.cpp") + glob.glob("csrc/ops/*/*.cpp"))
    cxx = ["-O3"]
    if not with_cuda:
        return CppExtension("segproto._C", sources, extra_compile_args={"cxx": cxx})
    sources += sorted(glob.glob("csrc/ops/*/*.cu"))
    nvcc = ["-O3"]  # no --use_fast_math: the kernels must match the CPU arithmetic
    return CUDAExtension("segproto._C", sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc})


setup(
    packages=find_packages(include=["segproto", "segproto.*"]),
    package_data={"segproto": ["_build_info.json", "data/taxonomies/*.yaml", "data/folds/*.yaml", "data/split_lists/*/*/*.txt"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
)
