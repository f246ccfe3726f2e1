"""Loading the compiled extension ``segproto._C``: the recorded build info is checked against the
running torch/CUDA, the shared library against truncation (a cut-short file would crash the
interpreter with SIGBUS when mapped), and the outcome is kept in :data:`EXT` / :data:`EXT_ERROR`.
:mod:`segproto.ops` dispatches on it."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

__all__ = ["EXT", "EXT_CUDA", "EXT_ERROR", "build_info", "elf_problem"]

_BUILD_INFO_FILE = Path(__file__).with_name("_build_info.json")


def _read_build_info() -> Optional[dict]:
    try:
        return json.loads(_BUILD_INFO_FILE.read_text())
    except (OSError, ValueError):
        return None


def _load_extension() -> tuple[bool, Optional[str], Optional[dict]]:
    """Returns (loaded, reason it did not load, recorded build info)."""
    info = _read_build_info()
    if info is None:
        return False, "segproto was not built (no _build_info.json); run `pip install --no-build-isolation -e .`", None
    if info.get("torch") != torch.__version__:
        return False, (
            f"segproto._C was built against torch {info.get('torch')} but torch {torch.__version__} is "
            "installed; rebuild it with `pip install --no-build-isolation -e .`"
        ), info
    if info.get("cuda") and info.get("cuda_version") != torch.version.cuda:
        return False, (
            f"segproto._C was built with CUDA {info.get('cuda_version')} kernels but torch reports CUDA "
            f"{torch.version.cuda}; rebuild it with `pip install --no-build-isolation -e .`"
        ), info
    for lib in _extension_files():
        problem = elf_problem(lib)
        if problem is not None:  # the dynamic loader would map past the end of the file: SIGBUS
            return False, f"segproto._C cannot load: {lib} {problem}; rebuild it with `pip install --no-build-isolation -e .`", info
    try:
        from segproto import _C  # noqa: F401  (loading the library registers the ops)
    except ImportError as exc:
        return False, f"segproto._C failed to load ({exc})", info
    return True, None, info


def _extension_files() -> list[Path]:
    from importlib.machinery import EXTENSION_SUFFIXES

    here = Path(__file__).parent
    return [here / f"_C{suffix}" for suffix in EXTENSION_SUFFIXES if (here / f"_C{suffix}").is_file()]


def elf_problem(path: Path) -> Optional[str]:
    """Why an ELF shared library is cut short, or None. A file whose program or section headers
    point past its end (an interrupted copy or build) would crash the interpreter with SIGBUS when
    mapped; a file that is not ELF at all is left to the loader (a clean ImportError)."""
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 16 or head[:4] != b"\x7fELF":
                return None
            bits, order = head[4], {1: "<", 2: ">"}.get(head[5])
            if bits not in (1, 2) or order is None:
                return None
            full = 64 if bits == 2 else 52
            if len(head) < full:
                return f"is truncated ({size} bytes: no complete ELF header)"
            word = "Q" if bits == 2 else "I"
            phoff, shoff = struct.unpack_from(order + word * 2, head, 0x20 if bits == 2 else 0x1C)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(order + "HHHH", head, 0x36 if bits == 2 else 0x2A)
            if phoff + phnum * phentsize > size or shoff + shnum * shentsize > size:
                return f"is truncated ({size} bytes; its ELF headers reach past the end)"
            f.seek(phoff)
            for _ in range(phnum):
                raw = f.read(phentsize)
                if bits == 2:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz
                    p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(order + "IIQQQQ", raw)
                else:  # p_type, p_offset, p_vaddr, p_paddr, p_filesz
                    p_type, p_offset, _, _, p_filesz = struct.unpack_from(order + "IIIII", raw)
                if p_type == 1 and p_offset + p_filesz > size:  # PT_LOAD
                    return f"is truncated ({size} bytes; a loadable segment ends at byte {p_offset + p_filesz})"
            f.seek(shoff)
            for _ in range(shnum):  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
                raw = f.read(shentsize)
                _, sh_type, _, _, sh_offset, sh_size = struct.unpack_from(order + "II" + word * 4, raw)
                if sh_type != 8 and sh_offset + sh_size > size:  # 8: SHT_NOBITS (no file bytes)
                    return f"is truncated ({size} bytes; a section ends at byte {sh_offset + sh_size})"
    except (OSError, struct.error) as exc:
        return f"cannot be read ({exc})"
    return None


EXT, EXT_ERROR, _BUILD_INFO = _load_extension()
if not EXT:
    if os.environ.get("SEGPROTO_REQUIRE_EXT", "0") not in ("", "0"):
        raise ImportError(f"SEGPROTO_REQUIRE_EXT is set and {EXT_ERROR}")
    warnings.warn(f"{EXT_ERROR}; using the pure-PyTorch reference ops (slower).", RuntimeWarning, stacklevel=2)
EXT_CUDA = bool(EXT and _BUILD_INFO and _BUILD_INFO.get("cuda"))


def build_info() -> dict[str, Any]:
    """What was built and what is loaded.

    Returns:
        dict with ``extension`` (bool: ``_C`` loaded), ``cuda`` (bool: CUDA kernels compiled in),
        ``torch`` (version built against, or the runtime one if not built), ``cuda_version``,
        ``arch_list`` and ``error`` (why the extension is not loaded, or None).
    """
    info = dict(_BUILD_INFO or {})
    return {
        "extension": EXT,
        "cuda": EXT_CUDA,
        "torch": info.get("torch", torch.__version__),
        "cuda_version": info.get("cuda_version"),
        "arch_list": info.get("arch_list"),
        "error": EXT_ERROR,
    }
