"""The pretrained-regime HDMNet config draws 1- and 5-shot episodes of every fold from the
128 px benchmark's validation and test splits (the images its min_fg_pixels leaves are enough)."""

import numpy as np
import pytest
from PIL import Image

from segproto.config import load_config
from segproto.data.pipeline.dataset import DatasetError
from segproto.data.synth.synthetic import generate_synthetic
from segproto.engine.builder import build_split

pytestmark = pytest.mark.slow
CONFIG = "configs/pretrained128/hdmnet.yaml"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # the validation and test images do not depend on num_train: the same files as data/synthetic_128
    path = tmp_path_factory.mktemp("synthetic_128")
    generate_synthetic(path, num_train=1, num_val=200, num_test=200, image_size=128, seed=0)
    return path


def _cfg(root, fold, shots, *extra):
    return load_config(CONFIG, [f"fewshot.fold={fold}", f"fewshot.shots={shots}", f"data.root={root}",
                                "data.synthetic.num_train=1", *extra])


def test_every_fold_has_episodes_at_1_and_5_shots(root):
    for fold in range(4):
        for shots in (1, 5):
            cfg = _cfg(root, fold, shots)
            for split in ("val", "test"):
                episodes = build_split(cfg, split, train=False)
                assert len(episodes) == cfg.fewshot.val_episodes


def test_min_fg_pixels_matches_an_independent_count(root):
    # the fewest images any class has with >= N of its pixels, counted straight from the label files
    cfg = _cfg(root, 0, 5)
    n = cfg.fewshot.min_fg_pixels
    for split in ("val", "test"):
        counts = np.stack([np.bincount(np.asarray(Image.open(f)).ravel(), minlength=256)[:22]
                           for f in sorted((root / "ann_dir" / split).glob("*.png"))])
        assert ((counts >= n).sum(0) >= 6).all(), split  # shots + 1 for 5 shots
        assert ((counts >= 64).sum(0) < 6).any(), split  # the area-scaled 64 would not do
    with pytest.raises(DatasetError, match="traffic light"):
        build_split(_cfg(root, 1, 1, "fewshot.min_fg_pixels=64"), "test", train=False)
