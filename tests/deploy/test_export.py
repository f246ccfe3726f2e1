"""One-file exports (pth, TorchScript, torch.export, ONNX through onnxruntime) and load_model: each
gives the checkpoint's logits on random images of odd sizes, carries its class names, palette and
normalisation, and needs neither the config nor the dataset."""

import json

import pytest
import torch

from segproto.deploy import ModelFileError, SegModel, detect_format, load_model
from segproto.export import main as export_main

from .conftest import reference

SIZES = [(1, 37, 53), (2, 61, 29), (1, 17, 23)]  # exports accept H, W > the largest stride (16)


def _images(n, h, w, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


def test_checkpoint_loads_alone_in_eval_mode(seg_ckpt):
    path, cfg, method = seg_ckpt
    model = load_model(path, "cpu")
    assert isinstance(model, SegModel) and not model.training and model.format == "checkpoint"
    assert model.classes == [f"class{i}" for i in range(5)] and len(model.palette) == 5
    assert model.mean == list(cfg.data.mean) and model.std == list(cfg.data.std)
    for n, h, w in SIZES:
        x = _images(n, h, w)
        with torch.no_grad():
            assert torch.equal(model(x), reference(method, cfg, x))
    assert not (path.parent / "no_dataset_here").exists()  # the dataset was neither read nor generated


FORMATS = [("pth", "model.pth", 1e-5), ("torchscript", "model.ts", 1e-5), ("exported", "model.pt2", 1e-4),
           ("onnx", "model.onnx", 1e-3)]


@pytest.mark.parametrize("fmt,name,tol", FORMATS, ids=[f[0] for f in FORMATS])
def test_export_matches_checkpoint(seg_ckpt, tmp_path, capsys, fmt, name, tol):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    path, cfg, method = seg_ckpt
    out = tmp_path / name
    assert export_main([str(path), str(out), "--format", fmt]) == 0
    assert "parity" in capsys.readouterr().out
    assert detect_format(out) == fmt
    assert [p.name for p in tmp_path.iterdir()] == [name]  # one file, no temp or external-data leftovers
    model = load_model(out, "cpu")
    assert model.format == fmt and model.kind == "segmentor"
    assert model.classes == [f"class{i}" for i in range(5)]
    assert model.meta["mean"] == list(cfg.data.mean) and model.meta["std"] == list(cfg.data.std)
    assert model.meta["input"]["image"].startswith("float32 [N, 3, H, W], RGB, 0..255")
    for n, h, w in SIZES:  # dynamic batch, height and width
        x = _images(n, h, w, seed=h)
        with torch.no_grad():
            got = model(x)
        want = reference(method, cfg, x)
        assert got.shape == want.shape == (n, 5, h, w)
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_export_with_config_and_old_layout(seg_ckpt, tmp_path):
    """``CONFIG CKPT OUT`` keeps working; a pth without metadata (segmentor + model_cfg + classes) loads
    with ImageNet statistics."""
    import yaml

    from segproto.config import config_to_dict

    path, cfg, method = seg_ckpt
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert export_main([str(cfg_path), str(path), str(tmp_path / "m.pth")]) == 0
    state = torch.load(tmp_path / "m.pth", weights_only=True)
    assert state["meta"]["classes"] == state["classes"] and state["model_cfg"]["arch"] == "deeplabv3plus"
    old = {"segmentor": state["segmentor"], "model_cfg": state["model_cfg"], "classes": state["classes"],
           "palette": None}
    torch.save(old, tmp_path / "old.pth")
    model = load_model(tmp_path / "old.pth", "cpu")
    assert model.mean == [123.675, 116.28, 103.53]
    x = _images(1, 33, 35)
    mean, std = torch.tensor(model.mean).view(1, 3, 1, 1), torch.tensor(model.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(model(x), method.deployable()((x - mean) / std))


def test_errors_are_one_line(seg_ckpt, tmp_path, capsys):
    path, cfg, _ = seg_ckpt
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_model(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="junk.pth") as e:
        load_model(tmp_path / "junk.pth")
    assert "\n" not in str(e.value)
    torch.save({"something": 1}, tmp_path / "other.pth")
    with pytest.raises(ModelFileError, match="neither a segproto training checkpoint"):
        load_model(tmp_path / "other.pth")
    state = torch.load(path, weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if "decode_head" not in k}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ModelFileError, match=r"partial.pth \('model' entries 'segmentor\.\*'\): weights do not fit"):
        load_model(tmp_path / "partial.pth")
    del state["meta"]["config"]
    torch.save(state, tmp_path / "noconfig.pth")
    with pytest.raises(ModelFileError, match="without 'meta.config'; give the config"):
        load_model(tmp_path / "noconfig.pth")
    assert export_main([str(tmp_path / "missing.pth"), str(tmp_path / "o.pth")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.pth" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        export_main([str(path), str(tmp_path / "o.xyz"), "--format", "tflite"])


def test_meta_is_json(seg_ckpt, tmp_path):
    path, _, _ = seg_ckpt
    model = load_model(path, "cpu")
    assert json.loads(json.dumps(model.meta)) == model.meta
