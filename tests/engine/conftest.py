"""A tiny generated dataset and config shared by the engine tests (seconds per run on 2 cores)."""

from pathlib import Path

import pytest
import yaml

from segproto.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    from segproto.data import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic_tiny")
    generate_synthetic(root, num_train=16, num_val=6, num_test=6, image_size=32, seed=0)
    return root


def tiny_cfg_dict(root: Path, **train) -> dict:
    return {
        "_base_": str(REPO / "configs/_base_/default.yaml"),
        "seed": 3,
        "data": {"root": str(root), "synthetic": {"num_train": 16, "num_val": 6, "num_test": 6, "image_size": 32},
                 "crop_size": [32, 32], "batch_size": 4, "val_batch_size": 3},
        "model": {"arch": "fcn", "backbone": "resnet18", "output_stride": 8, "channels": 16},
        "train": {"iters": 6, "eval_interval": 3, "log_interval": 2, "checkpoint_interval": 3,
                  "max_keep_ckpts": -1, "progress_bar": False, **train},
    }


@pytest.fixture
def write_cfg(tmp_path, tiny_root):
    def make(**train) -> Path:
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(tiny_cfg_dict(tiny_root, **train)))
        return path

    return make


@pytest.fixture
def tiny_cfg(write_cfg):
    return lambda **train: load_config(write_cfg(**train))
