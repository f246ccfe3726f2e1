"""HDMNet: load_model from a checkpoint or a pth export (no stage-one file), segproto.inference and
python -m segproto.infer with --support, segproto.test without the stage-one checkpoint and with
--show-dir, the stage-one work dir resolved to its last checkpoint."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import segproto
from segproto.config import config_to_dict
from segproto.export import main as export_main
from segproto.infer import main as infer_main
from segproto.test import main as run_test

from .conftest import cfg_dict, make_checkpoint

FOLDS = "num_folds: 3\nfolds:\n  - [0]\n  - [8]\n  - [1, 3]\n"


@pytest.fixture(scope="module")
def hdm(tmp_path_factory):
    from segproto.data import generate_synthetic

    tmp = tmp_path_factory.mktemp("hdm")
    generate_synthetic(tmp / "data", num_train=8, num_val=6, num_test=6, image_size=32, seed=0)
    (tmp / "folds.yaml").write_text(FOLDS)
    d = cfg_dict(tmp / "data", method={"name": "hdmnet"},
                 data={"synthetic": {"num_train": 8, "num_val": 6, "num_test": 6, "image_size": 32}},
                 model={"arch": "fcn", "backbone": "resnet18", "output_stride": 8, "channels": 16},
                 fewshot={"fold": 0, "folds": str(tmp / "folds.yaml"), "min_fg_pixels": 4, "val_episodes": 4,
                          "eval_seeds": [0]})
    cfg, method = make_checkpoint(d, tmp / "iter_7.pth", 2)
    d = config_to_dict(cfg)
    d["fewshot"]["backbone_checkpoint"] = str(tmp / "gone" / "base_fold{fold}")  # the stage-one run is gone
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(d))
    return tmp, cfg, method


def _episode(seed=0, size=(32, 40)):
    g = np.random.default_rng(seed)
    q = g.integers(0, 256, (*size, 3), dtype=np.uint8)
    s = g.integers(0, 256, (*size, 3), dtype=np.uint8)
    m = np.zeros(size, np.uint8)
    m[8:24, 10:30] = 255
    return q, s, m


def _reference(method, cfg, q, s, m):
    mean, std = torch.tensor(cfg.data.mean).view(3, 1, 1), torch.tensor(cfg.data.std).view(3, 1, 1)
    x = (torch.from_numpy(q).permute(2, 0, 1).float() - mean) / std
    sx = (torch.from_numpy(s).permute(2, 0, 1).float() - mean) / std
    with torch.no_grad():
        logits = method(x[None], support_img=sx[None, None], support_mask=torch.from_numpy(m > 0).long()[None, None])
    return logits.argmax(1)[0].numpy()


def test_load_model_export_and_inference(hdm, tmp_path):
    tmp, cfg, method = hdm
    q, s, m = _episode()
    want = _reference(method, cfg, q, s, m)
    model = segproto.load_model(tmp / "iter_7.pth", "cpu")
    assert model.kind == "hdmnet" and model.classes == ["background", "foreground"]
    assert np.array_equal(segproto.inference(model, q, support=[(s, m)]), want)
    assert export_main([str(tmp / "iter_7.pth"), str(tmp_path / "hdm.pth")]) == 0
    exported = segproto.load_model(tmp_path / "hdm.pth", "cpu")
    assert exported.meta["arch"]["hdmnet"]["pretrained"] is None
    assert np.array_equal(segproto.inference(exported, q, support=[(s, m), (s, m)]),
                          segproto.inference(model, q, support=[(s, m), (s, m)]))
    assert np.array_equal(segproto.inference(exported, q, support=[(s, m)]), want)
    with pytest.raises(ValueError, match="needs support"):
        segproto.inference(exported, q)
    assert export_main([str(tmp / "iter_7.pth"), str(tmp_path / "hdm.onnx")]) == 1  # pth only, one line


def test_infer_cli_with_support(hdm, tmp_path, capsys):
    tmp, cfg, method = hdm
    q, s, m = _episode(1)
    Image.fromarray(q).save(tmp_path / "q.png")
    Image.fromarray(s).save(tmp_path / "s.png")
    Image.fromarray(m).save(tmp_path / "m.png")
    args = [str(tmp / "iter_7.pth"), str(tmp_path / "q.png"), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert infer_main(args) == 2 and "--support IMG MASK" in capsys.readouterr().err
    assert infer_main(args + ["--support", str(tmp_path / "s.png"), str(tmp_path / "m.png")]) == 0
    got = np.asarray(Image.open(tmp_path / "out" / "q_pred.png"))
    assert np.array_equal(got, _reference(method, cfg, q, s, m))


def test_segproto_test_without_stage_one_and_show_dir(hdm, tmp_path):
    tmp, cfg, method = hdm
    out = tmp_path / "fs.json"
    assert run_test([str(tmp / "cfg.yaml"), str(tmp / "iter_7.pth"), "--out", str(out), "--split", "val",
                     "--show-dir", str(tmp_path / "show")]) == 0
    assert json.loads(out.read_text())["seeds"]["0"]["episodes"] == 4
    pics = sorted((tmp_path / "show").glob("episode_*_road.png"))
    assert len(pics) == 4
    assert np.asarray(Image.open(pics[0])).shape[1] == 4 * 192 + 3 * 4  # support | query | truth | prediction


def test_stage_one_work_dir_resolves_to_its_last_checkpoint(hdm, tmp_path):
    from segproto.config import config_from_dict
    from segproto.engine.checkpoint import CheckpointError
    from segproto.methods.hdmnet import stage_one_checkpoint

    tmp, cfg, _ = hdm
    d = config_to_dict(cfg)
    wd = tmp_path / "base_fold0"
    wd.mkdir()
    d["fewshot"]["backbone_checkpoint"] = str(tmp_path / "base_fold{fold}")
    c = config_from_dict(d)
    with pytest.raises(CheckpointError, match="base_fold0 holds no checkpoint"):
        stage_one_checkpoint(c)
    for n in (2, 10):
        (wd / f"iter_{n}.pth").write_bytes(b"")
    assert stage_one_checkpoint(c) == str(wd / "iter_10.pth")
    (wd / "last_checkpoint").write_text("iter_2.pth")
    assert stage_one_checkpoint(c) == str(wd / "iter_2.pth")
    d["fewshot"]["backbone_checkpoint"] = str(tmp_path / "nothing.pth")
    with pytest.raises(CheckpointError, match="nothing.pth not found"):
        stage_one_checkpoint(config_from_dict(d))
