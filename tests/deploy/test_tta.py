"""Test-time modes: slide with one window equals whole-image inference; slide windows follow mmseg's
grid; slide, flip and scales agree with independent references on models whose answer is known."""

import pytest
import torch
import torch.nn.functional as F

from segproto.tta import TestMode, predict, slide_logits

from .conftest import reference


def test_one_window_slide_equals_whole(seg_ckpt):
    from segproto.deploy import load_model

    _, cfg, method = seg_ckpt
    model = load_model(seg_ckpt[0], "cpu")
    x = torch.rand(2, 3, 45, 39, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        whole = reference(method, cfg, x)
        for crop, stride in (((45, 39), (10, 10)), ((64, 64), (32, 32))):
            got, are_probs = predict(model, x, TestMode("slide", crop, stride))
            assert not are_probs and torch.equal(got, whole)


def test_windows_follow_mmseg_grid():
    seen = []

    def fn(x):
        seen.append(tuple(x.shape[-2:]))
        return x[:, :1]

    x = torch.arange(10 * 7, dtype=torch.float32).view(1, 1, 10, 7).expand(1, 3, 10, 7)
    out = slide_logits(fn, x, (4, 5), (3, 2))
    # h: max(10 - 4 + 2, 0) // 3 + 1 = 3 rows (y1 = 0, 3, 6); w: max(7 - 5 + 1, 0) // 2 + 1 = 2 (x1 = 0, 2)
    assert seen == [(4, 5)] * 6
    assert torch.equal(out, x[:, :1])  # every pixel: the mean of identical copies of itself


def test_slide_and_flip_with_pointwise_model_equal_whole():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 1).double()
    x = torch.randn(2, 3, 23, 31, dtype=torch.float64)
    with torch.no_grad():
        whole = conv(x)
        slid, _ = predict(conv, x, TestMode("slide", (8, 12), (5, 7)))
        torch.testing.assert_close(slid, whole)
        flipped, are_probs = predict(conv, x, TestMode(flip=True))
        assert are_probs
        torch.testing.assert_close(flipped, whole.softmax(1))
        both, _ = predict(conv, x, TestMode("slide", (8, 12), (5, 7), flip=True))
        torch.testing.assert_close(both, whole.softmax(1))


def test_multi_scale_averages_resized_softmax():
    """Reference: resize the image, run, resize the logits back, softmax, mean (mmseg's aug_test)."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(3, 5, 3, padding=1))
    x = torch.randn(1, 3, 20, 30)
    with torch.no_grad():
        got, are_probs = predict(net, x, TestMode(scales=(0.5, 1.0, 1.5), flip=True))
        ref = 0
        for s in (0.5, 1.0, 1.5):
            size = (int(20 * s + 0.5), int(30 * s + 0.5))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if s != 1.0 else x
            for flip in (False, True):
                y = net(xs.flip(-1)).flip(-1) if flip else net(xs)
                y = F.interpolate(y, size=(20, 30), mode="bilinear", align_corners=False) if s != 1.0 else y
                ref = ref + y.softmax(1)
    assert are_probs
    torch.testing.assert_close(got, ref / 6)


def test_bad_modes_name_the_key():
    with pytest.raises(ValueError, match="'crop'"):
        TestMode("slide", None, (2, 2))
    with pytest.raises(ValueError, match="'whole' or 'slide'"):
        TestMode("tile")
    with pytest.raises(ValueError, match="'scales'"):
        TestMode(scales=(0.0,))
