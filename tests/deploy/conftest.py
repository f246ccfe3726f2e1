"""Checkpoints in the trainer's layout (``{"model", "meta": {"config", "classes", "iter"}}``), built
without training: random weights and non-trivial BatchNorm statistics, so eval outputs are not
trivial. The deployable model of the method is the reference every loaded or exported model is
compared with."""

from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]


def cfg_dict(root: Path, **extra) -> dict:
    d = {
        "_base_": None,
        "seed": 3,
        "data": {"root": str(root), "synthetic": {"num_train": 8, "num_val": 4, "num_test": 4, "image_size": 32},
                 "crop_size": [32, 32], "batch_size": 2, "val_batch_size": 2,
                 "mean": [120.0, 110.0, 100.0], "std": [50.0, 60.0, 55.0]},
        "model": {"arch": "deeplabv3plus", "backbone": "resnet18", "output_stride": 16, "channels": 16},
        "train": {"iters": 2, "progress_bar": False},
    }
    del d["_base_"]
    for k, v in extra.items():
        d.setdefault(k, {}).update(v) if isinstance(v, dict) else d.__setitem__(k, v)
    return d


def make_checkpoint(d: dict, path: Path, num_classes: int, seed: int = 0):
    """Writes a checkpoint of ``d``'s method; returns (config, method in eval mode)."""
    from segproto.config import config_from_dict, config_to_dict
    from segproto.methods import build_method

    cfg = config_from_dict(d)
    torch.manual_seed(seed)
    method = build_method(cfg, num_classes)
    g = torch.Generator().manual_seed(seed + 1)
    for m in method.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    classes = ["background", "foreground"] if cfg.method.name == "hdmnet" else [f"class{i}" for i in range(num_classes)]
    torch.save({"model": method.state_dict(), "meta": {"iter": 7, "config": config_to_dict(cfg), "classes": classes,
                                                        "world_size": 1}}, path)
    return cfg, method.eval()


def reference(method, cfg, image: torch.Tensor) -> torch.Tensor:
    """Logits of the checkpoint's deployable model on raw 0..255 RGB ``[N, 3, H, W]``."""
    mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return method.deployable().eval()((image - mean) / std)


@pytest.fixture(scope="session")
def seg_ckpt(tmp_path_factory):
    """(checkpoint path, config, method) of a 5-class DeepLabV3+ whose data root does not exist."""
    tmp = tmp_path_factory.mktemp("deploy_ckpt")
    d = cfg_dict(tmp / "no_dataset_here")
    cfg, method = make_checkpoint(d, tmp / "iter_7.pth", 5)
    return tmp / "iter_7.pth", cfg, method


@pytest.fixture(scope="session")
def data_ckpt(tmp_path_factory):
    """(config file, checkpoint) of a 22-class FCN over a generated 32-px synthetic dataset."""
    import yaml

    from segproto.config import config_to_dict
    from segproto.data import generate_synthetic

    tmp = tmp_path_factory.mktemp("deploy_data")
    generate_synthetic(tmp / "data", num_train=8, num_val=4, num_test=4, image_size=32, seed=0)
    d = cfg_dict(tmp / "data", model={"arch": "fcn", "backbone": "resnet18", "output_stride": 8, "channels": 16})
    cfg, _ = make_checkpoint(d, tmp / "iter_7.pth", 22)
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    return tmp / "cfg.yaml", tmp / "iter_7.pth"
