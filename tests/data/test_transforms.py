"""Transforms: crop/pad/flip/rescale on hand-made arrays; seed-only reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segproto.data.transforms import (EvalTransform, TrainTransform, crop, hflip, normalize,
                                      pad_to, rescale)


def _toy(h: int = 5, w: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Image whose channels encode (row, col, label) so any geometric op can be traced."""
    gt = (np.arange(h * w).reshape(h, w) % 4).astype(np.uint8)
    img = np.stack([np.repeat(np.arange(h)[:, None], w, 1),
                    np.repeat(np.arange(w)[None, :], h, 0), gt * 10], -1).astype(np.uint8)
    return img, gt


def test_pad_bottom_right_with_zero_and_ignore():
    img, gt = _toy(2, 3)
    x, y = pad_to(img.astype(np.float32), gt, (4, 4), ignore_index=255)
    assert x.shape == (4, 4, 3) and y.shape == (4, 4)
    np.testing.assert_array_equal(x[:2, :3], img)
    assert (x[2:] == 0).all() and (x[:, 3:] == 0).all()
    np.testing.assert_array_equal(y[:2, :3], gt)
    assert (y[2:] == 255).all() and (y[:, 3:] == 255).all()
    same = pad_to(img, gt, (1, 1))
    assert same[0] is img and same[1] is gt


def test_crop_and_flip_exact():
    img, gt = _toy()
    x, y = crop(img, gt, 1, 2, (3, 4))
    assert x[..., 0].tolist() == [[1] * 4, [2] * 4, [3] * 4]  # rows 1..3
    assert x[0, :, 1].tolist() == [2, 3, 4, 5]  # cols 2..5
    np.testing.assert_array_equal(y, gt[1:4, 2:6])
    with pytest.raises(ValueError, match="outside"):
        crop(img, gt, 3, 0, (3, 4))
    fx, fy = hflip(img, gt)
    assert fx[0, :, 1].tolist() == [6, 5, 4, 3, 2, 1, 0]
    np.testing.assert_array_equal(fy, gt[:, ::-1])


def test_rescale_nearest_labels_and_sizes():
    img, gt = _toy(3, 4)
    x, y = rescale(img, gt, 2.0)
    assert x.shape == (6, 8, 3) and y.shape == (6, 8) and y.dtype == np.uint8
    np.testing.assert_array_equal(y, np.kron(gt, np.ones((2, 2), np.uint8)))
    x, y = rescale(img, gt, 0.5)
    assert x.shape[:2] == y.shape == (2, 2)  # round(1.5) = 2, round(2.0) = 2
    assert set(np.unique(y)) <= set(np.unique(gt))


def test_normalize_values():
    img = np.array([[[10, 20, 30]]], np.uint8)
    out = normalize(img, (10, 10, 10), (1, 2, 4))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [0, 5, 5])


def test_eval_transform_is_normalise_only():
    img, gt = _toy()
    x, y = EvalTransform((1, 2, 3), (2, 2, 2))(img, gt, None)
    assert x.shape == (3, 5, 7) and y.dtype == torch.int64
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), (img - [1, 2, 3]) / 2.0)
    assert y.tolist() == gt.tolist()


def _find_window(out_img: np.ndarray, out_gt: np.ndarray, img: np.ndarray, gt: np.ndarray,
                 size: tuple[int, int]) -> list[tuple[int, int, bool]]:
    """All (top, left, flipped) windows of the padded input equal to the output."""
    pi, pg = pad_to(img.astype(np.float32), gt, size)
    hits = []
    for top in range(pi.shape[0] - size[0] + 1):
        for left in range(pi.shape[1] - size[1] + 1):
            wi, wg = crop(pi, pg, top, left, size)
            for flip in (False, True):
                ci, cg = hflip(wi, wg) if flip else (wi, wg)
                if np.array_equal(ci, out_img) and np.array_equal(cg, out_gt):
                    hits.append((top, left, flip))
    return hits


@pytest.mark.parametrize("shape, size", [((5, 7), (3, 4)), ((3, 4), (5, 6))])
def test_train_output_is_a_padded_window_kept_aligned(shape, size):
    img, gt = _toy(*shape)
    tf = TrainTransform(size, scale_range=(1.0, 1.0), flip=0.5, mean=(0, 0, 0),
                        std=(1, 1, 1))
    flips = set()
    for seed in range(12):
        x, y = tf(img, gt, seed)
        assert x.shape == (3, *size) and y.shape == size
        hits = _find_window(x.permute(1, 2, 0).numpy(), y.numpy(), img, gt, size)
        assert hits, f"seed {seed}: output is not a (flipped) window of the input"
        flips.add(hits[0][2])
    assert flips == {False, True}  # both flip outcomes occur


def test_train_transform_reproducible_from_seed_only():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    gt = rng.integers(0, 5, (40, 50), dtype=np.uint8)
    tf = TrainTransform((32, 32), scale_range=(0.5, 2.0))
    a = tf(img, gt, 123)
    np.random.seed(999)  # global state must not matter
    torch.manual_seed(999)
    b = TrainTransform((32, 32), scale_range=(0.5, 2.0))(img, gt, 123)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outs = [tf(img, gt, s)[0] for s in range(6)]
    assert len({o.sum().item() for o in outs}) > 1
    assert set(torch.unique(a[1]).tolist()) <= set(range(5)) | {255}
    with pytest.raises(ValueError, match="seed"):
        tf(img, gt, None)


def test_cat_max_ratio_prefers_mixed_crops():
    img = np.zeros((20, 20, 3), np.uint8)
    gt = np.zeros((20, 20), np.uint8)
    gt[:, 15:] = 1  # class 0 dominates most 8x8 windows
    tf = TrainTransform(8, scale_range=(1, 1), flip=False, cat_max_ratio=0.9)
    plain = TrainTransform(8, scale_range=(1, 1), flip=False)
    mixed = sum(len(torch.unique(tf(img, gt, s)[1])) > 1 for s in range(30))
    base = sum(len(torch.unique(plain(img, gt, s)[1])) > 1 for s in range(30))
    assert mixed > base and mixed >= 25
