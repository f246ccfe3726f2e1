"""segproto.inference on every supported input (path, PIL, numpy, tensor; RGB, RGBA, grayscale,
palette, 16-bit) against the checkpoint's logits on the same RGB values, and python -m segproto.infer
(checkpoint or export alone, the CONFIG CKPT form, bad files, colliding names)."""

import numpy as np
import pytest
import torch
from PIL import Image

import segproto
from segproto.infer import main as infer_main
from segproto.infer import output_names

from .conftest import reference


def _labels(method, cfg, rgb: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]
    return reference(method, cfg, x).argmax(1)[0].numpy()


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)


def test_five_line_example(seg_ckpt, rgb, tmp_path):
    path, cfg, method = seg_ckpt
    Image.fromarray(rgb).save(tmp_path / "street.png")
    model = segproto.load_model(path)
    labels = segproto.inference(model, tmp_path / "street.png")
    assert labels.shape == (37, 45) and labels.dtype == np.int64
    assert np.array_equal(labels, _labels(method, cfg, rgb))
    labels2, probs = segproto.inference(model, str(tmp_path / "street.png"), probs=True)
    assert np.array_equal(labels2, labels) and probs.shape == (5, 37, 45)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(probs.argmax(0), labels)


def test_every_input_kind(seg_ckpt, rgb, tmp_path):
    path, cfg, method = seg_ckpt
    model = segproto.load_model(path, "cpu")
    want = _labels(method, cfg, rgb)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 77, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    cases = {"pil": Image.fromarray(rgb), "numpy": rgb, "float numpy": rgb.astype(np.float32),
             "tensor chw": torch.from_numpy(rgb).permute(2, 0, 1), "tensor 1chw": torch.from_numpy(rgb).permute(2, 0, 1)[None],
             "rgba file": tmp_path / "a.png", "rgba array": rgba, "uint16 array": rgb.astype(np.uint16) * 257}
    for name, image in cases.items():
        assert np.array_equal(segproto.inference(model, image), want), name
    gray = rgb[..., 1]
    want_gray = _labels(method, cfg, np.repeat(gray[..., None], 3, -1))
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit grayscale PNG
    pal = Image.fromarray(gray, "L").convert("P")
    cases = {"L file": tmp_path / "g.png", "16-bit file": tmp_path / "g16.png", "2-d array": gray,
             "palette": pal}
    for name, image in cases.items():
        got = segproto.inference(model, image)
        ref = want_gray if name != "palette" else _labels(method, cfg, np.asarray(pal.convert("RGB")))
        assert np.array_equal(got, ref), name
    with pytest.raises(ValueError, match=r"shape \(4, 5\)|expected \[H, W\]"):
        segproto.inference(model, np.zeros((2, 4, 5, 6)))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        segproto.inference(model, tmp_path / "nope.png")


def test_output_names_never_collide():
    names = output_names(["a/x.jpg", "a/x.png", "b/x.png", "c/y.png", "x_png"])
    assert len(set(names)) == 5 and names[3] == "y"
    assert names[:3] == ["x_jpg", "x_png", "x_png_2"]


def test_infer_cli_from_export_alone_keeps_going(seg_ckpt, rgb, tmp_path, capsys):
    path, cfg, method = seg_ckpt
    from segproto.export import main as export_main

    assert export_main([str(path), str(tmp_path / "m.pth")]) == 0
    Image.fromarray(rgb).save(tmp_path / "x.png")
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 200, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    capsys.readouterr()
    out = tmp_path / "out"
    code = infer_main([str(tmp_path / "m.pth"), str(tmp_path / "x.png"), str(tmp_path / "x.jpg"),
                       str(tmp_path / "missing.png"), str(tmp_path / "broken.png"), str(tmp_path / "rgba.png"),
                       "--out", str(out), "--device", "cpu"])
    cap = capsys.readouterr()
    assert code == 1
    errors = cap.err.strip().splitlines()
    assert len(errors) == 2 and "missing.png" in errors[0] and "broken.png" in errors[1]
    assert "Traceback" not in cap.err and "3 of 5 images segmented, 2 failed" in cap.out
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"{n}_{k}.png" for n in ("x_png", "x_jpg", "rgba") for k in ("pred", "overlay"))
    pred = Image.open(out / "x_png_pred.png")
    assert pred.mode == "P" and pred.size == (45, 37)
    assert np.array_equal(np.asarray(pred), _labels(method, cfg, rgb))
    assert np.array_equal(np.asarray(Image.open(out / "rgba_pred.png")), _labels(method, cfg, rgb))
    model = segproto.load_model(tmp_path / "m.pth", "cpu")
    assert pred.getpalette()[:15] == [c for col in model.palette for c in col]


def test_infer_cli_config_form_needs_no_dataset(seg_ckpt, rgb, tmp_path):
    """``CONFIG CKPT IMAGES...``: the dataset is neither generated (synthetic with a missing root)
    nor looked for (Cityscapes without its root, a folder dataset without classes)."""
    import yaml

    from segproto.config import config_to_dict

    path, cfg, method = seg_ckpt
    d = config_to_dict(cfg)
    d["data"]["root"] = str(tmp_path / "empty_root")
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    Image.fromarray(rgb).save(tmp_path / "x.png")
    for opts in ([], ["data.dataset=cityscapes"], ["data.dataset=folder"]):
        out = tmp_path / f"out{len(opts)}{opts[0][13:] if opts else ''}"
        args = [str(cfg_path), str(path), str(tmp_path / "x.png"), "--out", str(out), "--device", "cpu"]
        assert infer_main(args + (["--cfg-options", *opts] if opts else [])) == 0, opts
        assert np.array_equal(np.asarray(Image.open(out / "x_pred.png")), _labels(method, cfg, rgb))
    assert not (tmp_path / "empty_root").exists()


def test_infer_cli_test_modes(seg_ckpt, rgb, tmp_path):
    path, cfg, method = seg_ckpt
    Image.fromarray(rgb).save(tmp_path / "x.png")
    args = [str(path), str(tmp_path / "x.png"), "--device", "cpu"]
    assert infer_main(args + ["--out", str(tmp_path / "whole")]) == 0
    assert infer_main(args + ["--out", str(tmp_path / "slide"), "--mode", "slide", "--crop", "64", "64",
                              "--stride", "32", "32"]) == 0  # one window covers the image
    same = [np.asarray(Image.open(tmp_path / d / "x_pred.png")) for d in ("whole", "slide")]
    assert np.array_equal(*same)
    assert infer_main(args + ["--out", str(tmp_path / "ms"), "--flip", "--scales", "0.75", "1.0"]) == 0
    with pytest.raises(SystemExit) as e:
        infer_main(args + ["--out", str(tmp_path / "bad"), "--crop", "8", "8"])
    assert e.value.code == 2
