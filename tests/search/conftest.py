"""Shared by the sweep tests: the engine tests' tiny dataset and config (seconds per training run).

No ``__init__.py`` here on purpose: as a package this directory would be imported as ``search``
(pytest puts ``tests/`` on ``sys.path``) and hide the repository's ``search`` package.
"""

from pathlib import Path

import pytest
import yaml

from tests.engine.conftest import tiny_cfg, tiny_cfg_dict, tiny_root, write_cfg  # noqa: F401  (fixtures)


@pytest.fixture
def write_space(tmp_path):
    """Writes a space file from a ``{key: spec}`` dict (or raw YAML text); returns its path."""
    def make(spec, name: str = "space.yaml") -> Path:
        path = tmp_path / name
        path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
        return path

    return make


@pytest.fixture
def one_thread():
    """torch on one thread, as in a trial with one CPU (also much faster on a busy 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
