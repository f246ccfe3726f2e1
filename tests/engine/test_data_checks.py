"""Every split's files are decoded before the first iteration: a damaged training image whose
header still reads ends the run at start-up, naming the file, with nothing written."""

import shutil

import pytest
import yaml

from segproto.config import load_config
from segproto.data import DatasetError, image_header
from segproto.engine import Trainer
from tests.engine.conftest import tiny_cfg_dict


@pytest.fixture
def root(tiny_root, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(tiny_root, dst)
    return dst


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_truncated_image_with_a_readable_header_fails_before_the_first_iteration(root, tmp_path, split):
    bad = sorted((root / "img_dir" / split).iterdir())[3]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])  # IHDR intact, pixel data cut
    assert image_header(bad) == (32, 32)  # a header check alone passes it
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_cfg_dict(root)))
    wd = tmp_path / "wd"
    with pytest.raises(DatasetError, match=rf"{bad.name}: cannot read image"):
        Trainer(load_config(cfg), wd)
    assert not wd.exists() or not any(wd.iterdir())
