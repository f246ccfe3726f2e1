"""The data package's subpackages, and the flat module paths that stay importable."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import segproto.data
from segproto.data._moved import MOVED

DATA = Path(segproto.data.__file__).parent


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_flat_path_is_the_moved_module_itself(old):
    alias = importlib.import_module(f"segproto.data.{old}")
    real = importlib.import_module(f"segproto.data.{MOVED[old]}")
    assert alias is real
    assert real.__spec__.name == f"segproto.data.{MOVED[old]}"  # its own spec, not the alias's
    assert not (DATA / f"{old}.py").exists()


def test_patching_through_a_flat_path_patches_the_module(monkeypatch):
    from segproto.data.pipeline import dataset
    monkeypatch.setattr("segproto.data.dataset.read_split", "patched")
    assert dataset.read_split == "patched"


def test_the_folders_hold_only_the_three_subpackages_and_the_joining_modules():
    flat = sorted(p.name for p in DATA.glob("*.py"))
    assert flat == ["__init__.py", "_moved.py", "build.py"]
    for sub in ("datasets", "pipeline", "synth"):
        assert (DATA / sub / "__init__.py").read_text().startswith('"""')


def test_the_generator_cli_runs_by_its_flat_path(tmp_path):
    for name in ("segproto.data.generate", "segproto.data.synth.generate"):
        out = subprocess.run([sys.executable, "-m", name, "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "--num-train" in out.stdout
