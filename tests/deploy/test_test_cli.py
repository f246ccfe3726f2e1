"""python -m segproto.test: the confusion matrix (JSON + heat map) agrees with the metrics, the
show-dir pictures hold image | ground truth | prediction and a legend, and slide with one window
gives the whole-image metrics."""

import json

import numpy as np
from PIL import Image

from segproto.evaluation import metrics_from_confusion
from segproto.test import main as run_test


def test_confusion_and_show_dir(data_ckpt, tmp_path):
    cfg, ckpt = data_ckpt
    out = tmp_path / "m.json"
    assert run_test([str(cfg), str(ckpt), "--out", str(out), "--show-dir", str(tmp_path / "show"),
                      "--split", "val"]) == 0
    metrics = json.loads(out.read_text())
    cm = json.loads((tmp_path / "m_confusion.json").read_text())
    assert cm["rows"] == "ground truth" and cm["classes"] == metrics["classes"]
    labels = [np.asarray(Image.open(p)) for p in sorted((cfg.parent / "data/ann_dir/val").glob("*.png"))]
    assert sum(sum(r) for r in cm["matrix"]) == sum(int((lab != 255).sum()) for lab in labels)
    again = metrics_from_confusion(np.array(cm["matrix"]), cm["classes"])
    written = [np.nan if v is None else v for v in metrics["IoU"]]  # the JSON writes NaN as null
    assert np.allclose(again["IoU"], written, equal_nan=True)
    heat = Image.open(tmp_path / "m_confusion.png")
    assert heat.size[0] > 200 and heat.size[1] > 200
    pics = sorted((tmp_path / "show").glob("*.png"))
    assert len(pics) == 4
    pic = np.asarray(Image.open(pics[0]).convert("RGB"))
    assert pic.shape[1] == 3 * 192 + 2 * 4 and pic.shape[0] > 192 + 16  # 32-px panels enlarged 6x, title, legend


def test_slide_with_one_window_equals_whole(data_ckpt, tmp_path):
    cfg, ckpt = data_ckpt
    runs = {}
    for name, extra in {"whole": [], "slide": ["--mode", "slide", "--crop", "32", "32", "--stride", "16", "16"],
                        "slide4": ["--mode", "slide", "--crop", "24", "24", "--stride", "8", "8", "--flip"]}.items():
        assert run_test([str(cfg), str(ckpt), "--out", str(tmp_path / f"{name}.json"), "--split", "val", *extra]) == 0
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert runs["slide"]["IoU"] == runs["whole"]["IoU"] and runs["slide"]["aAcc"] == runs["whole"]["aAcc"]
    assert runs["slide4"]["test_mode"] == {"mode": "slide", "crop": [24, 24], "stride": [8, 8], "flip": True,
                                           "scales": [1.0]}


def test_config_test_section_equals_the_flags(data_ckpt, tmp_path):
    """``test.*`` in the config gives what the same flags give; a flag that is given wins."""
    cfg, ckpt = data_ckpt
    slide_cfg = ["--cfg-options", "test.mode=slide", "test.crop=[24,24]", "test.stride=[8,8]", "test.flip=true"]
    runs = {}
    for name, extra in {"flags": ["--mode", "slide", "--crop", "24", "24", "--stride", "8", "8", "--flip"],
                        "config": slide_cfg,
                        "whole": [],
                        "config_whole": [*slide_cfg, "--mode", "whole", "--no-flip"]}.items():
        assert run_test([str(cfg), str(ckpt), "--out", str(tmp_path / f"{name}.json"), "--split", "val", *extra]) == 0
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    want = {"mode": "slide", "crop": [24, 24], "stride": [8, 8], "flip": True, "scales": [1.0]}
    assert runs["config"]["test_mode"] == runs["flags"]["test_mode"] == want
    assert runs["config"]["IoU"] == runs["flags"]["IoU"] and runs["config"]["aAcc"] == runs["flags"]["aAcc"]
    assert "test_mode" not in runs["config_whole"] and runs["config_whole"]["IoU"] == runs["whole"]["IoU"]


def test_flags_override_the_config_test_section():
    import argparse

    from segproto.cli import add_test_mode_args, test_mode_or_exit
    from segproto.config import TestConfig

    p = argparse.ArgumentParser()
    add_test_mode_args(p)
    section = TestConfig(mode="slide", crop=(64, 64), stride=(32, 48), flip=True, scales=[0.5, 1.0])
    m = test_mode_or_exit(p.parse_args([]), section)
    assert (m.mode, m.crop, m.stride, m.flip, m.scales) == ("slide", (64, 64), (32, 48), True, (0.5, 1.0))
    m = test_mode_or_exit(p.parse_args(["--stride", "16", "16", "--no-flip", "--scales", "2"]), section)
    assert (m.mode, m.crop, m.stride, m.flip, m.scales) == ("slide", (64, 64), (16, 16), False, (2.0,))
    m = test_mode_or_exit(p.parse_args(["--mode", "whole"]), section)
    assert (m.mode, m.crop, m.stride, m.plain) == ("whole", None, None, False)  # flip and scales still apply
    m = test_mode_or_exit(p.parse_args([]), None)
    assert m.plain
