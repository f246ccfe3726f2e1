"""A damaged compiled extension never crashes the interpreter: it falls back with a warning."""

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import segproto
from segproto.ops import _extension_files, elf_problem

PKG = Path(segproto.__file__).parent


def _loaded_end(lib: Path) -> int:
    """The end of the last loadable segment (PT_LOAD) of a 64-bit little-endian ELF file."""
    data = lib.read_bytes()
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    ends = []
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            ends.append(p_offset + p_filesz)
    return max(ends)


def _import_copy(tmp_path: Path, damage) -> subprocess.CompletedProcess:
    """Copies the package (with its built extension) to tmp_path, damages the copy's ``_C`` file and
    imports ``segproto.ops`` from the copy in a fresh interpreter."""
    dst = tmp_path / "segproto"
    shutil.copytree(PKG, dst, ignore=shutil.ignore_patterns("__pycache__"))
    lib = dst / _extension_files()[0].name
    damage(lib)
    code = ("import sys, warnings; sys.path.insert(0, sys.argv[1]); warnings.simplefilter('always');"
            "import segproto.ops as o; assert o.__file__.startswith(sys.argv[1]), o.__file__;"
            "print('extension', o.build_info()['extension']);"
            "import torch; s, c = o.class_sums(torch.ones(3, 2), torch.tensor([0, 1, 1]), 2); print(c.tolist())")
    env = {k: v for k, v in os.environ.items() if k != "SEGPROTO_REQUIRE_EXT"}  # the fallback is what is tested
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.mark.skipif(not _extension_files(), reason="the extension is not built")
@pytest.mark.parametrize("damage", ["truncated", "zero", "random"])
def test_a_damaged_extension_falls_back_without_a_crash(tmp_path, damage):
    def cut(lib: Path) -> None:
        data = lib.read_bytes()
        # cut inside the mapped segments: the loader maps them whole, and touching the missing pages
        # is a SIGBUS (a cut in the debug sections after them would load)
        lib.write_bytes({"truncated": data[: _loaded_end(lib) // 2], "zero": b"", "random": bytes(range(256)) * 64}[damage])

    out = _import_copy(tmp_path, cut)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])  # -7 was SIGBUS
    assert "extension False" in out.stdout and "[1, 2]" in out.stdout
    assert "using the pure-PyTorch reference ops" in out.stderr
    if damage == "truncated":
        assert "is truncated" in out.stderr


def test_elf_problem_reads_the_built_library_as_whole(tmp_path):
    for lib in _extension_files():
        assert elf_problem(lib) is None
        cut = tmp_path / lib.name
        cut.write_bytes(lib.read_bytes()[:4096])
        assert "is truncated" in elf_problem(cut)
    assert elf_problem(Path(sys.executable).resolve()) is None  # another whole ELF file
