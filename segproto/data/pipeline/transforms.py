"""Seeded segmentation transforms on numpy arrays.

All randomness comes from the per-sample ``seed`` argument (a fresh
``numpy.random.default_rng(seed)`` per call), never from global RNG state, so a sample's
augmentation depends only on ``(dataset index, sample seed)``: training is reproducible and
resumable regardless of the number of loader workers.

Train pipeline: random rescale by a ratio in ``scale_range`` -> normalise -> pad to at
least ``crop_size`` (bottom/right; image with 0 = the mean colour after normalisation, label
with ``ignore_index``) -> random crop -> random horizontal flip. Eval: normalise only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "rescale", "normalize", "pad_to", "crop",
           "hflip", "TrainTransform", "EvalTransform", "to_tensors"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def rescale(img: np.ndarray, gt: np.ndarray | None, ratio: float
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """Resizes by ``ratio`` (bilinear image, nearest label).

    Args:
        img: ``uint8 [H, W, 3]``.
        gt: ``[H, W]`` integer labels or None.
        ratio: Scale factor; the new size is ``round(H * ratio), round(W * ratio)`` (>= 1).
    """
    h, w = img.shape[:2]
    nh, nw = max(1, int(round(h * ratio))), max(1, int(round(w * ratio)))
    if (nh, nw) == (h, w):
        return img, gt
    img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    if gt is not None:
        mode = "L" if gt.dtype == np.uint8 else "I"
        lab = Image.fromarray(gt if mode == "L" else gt.astype(np.int32), mode)
        gt = np.asarray(lab.resize((nw, nh), Image.NEAREST)).astype(gt.dtype)
    return img, gt


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(img - mean) / std`` per channel: ``uint8 [H, W, 3] -> float32 [H, W, 3]``."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return (img.astype(np.float32) - m) / s


def pad_to(img: np.ndarray, gt: np.ndarray | None, size: tuple[int, int],
           ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray | None]:
    """Pads bottom/right to at least ``size = (h, w)``: image with 0, label with ignore."""
    h, w = img.shape[:2]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return img, gt
    img = np.pad(img, ((0, ph), (0, pw), (0, 0)), constant_values=0)
    if gt is not None:
        gt = np.pad(gt, ((0, ph), (0, pw)), constant_values=ignore_index)
    return img, gt


def crop(img: np.ndarray, gt: np.ndarray | None, top: int, left: int,
         size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Crops the window ``[top, top + h) x [left, left + w)``, which must lie inside."""
    h, w = size
    if top < 0 or left < 0 or top + h > img.shape[0] or left + w > img.shape[1]:
        raise ValueError(f"crop window {(top, left, h, w)} outside image {img.shape[:2]}")
    img = img[top:top + h, left:left + w]
    return img, (None if gt is None else gt[top:top + h, left:left + w])


def hflip(img: np.ndarray, gt: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirrors left-right."""
    return img[:, ::-1], (None if gt is None else gt[:, ::-1])


def to_tensors(img: np.ndarray, gt: np.ndarray | None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``float32 [H, W, 3] -> [3, H, W]`` tensor; labels to ``int64 [H, W]``."""
    t_img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), np.float32))
    t_gt = None if gt is None else torch.from_numpy(np.ascontiguousarray(gt, np.int64))
    return t_img, t_gt


class EvalTransform:
    """Normalisation only (no randomness; ``seed`` is ignored).

    Args:
        mean, std: Per-channel statistics in 0..255 pixel units.
    """

    random = False

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img: np.ndarray, gt: np.ndarray | None, seed: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``uint8 [H, W, 3]``, ``[H, W]`` -> ``float32 [3, H, W]``, ``int64 [H, W]``."""
        return to_tensors(normalize(img, self.mean, self.std), gt)


class TrainTransform:
    """Random rescale, pad, crop and flip driven only by the per-sample seed.

    Args:
        crop_size: Output ``(h, w)`` (or one int for a square).
        scale_range: ``(lo, hi)`` ratio of the input size, sampled uniformly.
        flip: Probability of a horizontal flip (``True`` = 0.5, ``False`` = 0).
        mean, std: Normalisation statistics in 0..255 units.
        ignore_index: Label used for padding.
        cat_max_ratio: If set, retry the crop (up to 10 times) until no single class
            covers more than this fraction of the crop's labelled pixels (mmseg's rule).
    """

    random = True

    def __init__(self, crop_size: int | Sequence[int],
                 scale_range: Sequence[float] = (0.5, 2.0), flip: bool | float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 ignore_index: int = 255, cat_max_ratio: float | None = None) -> None:
        self.crop_size = _pair(crop_size)
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.scale_range = (lo, hi)
        self.flip_prob = 0.5 if flip is True else float(flip)
        self.mean, self.std = tuple(mean), tuple(std)
        self.ignore_index = ignore_index
        self.cat_max_ratio = cat_max_ratio

    def _crop_origin(self, rng: np.random.Generator, gt: np.ndarray | None,
                     shape: tuple[int, int]) -> tuple[int, int]:
        ch, cw = self.crop_size
        top = left = 0
        for _ in range(10 if self.cat_max_ratio is not None and gt is not None else 1):
            top = int(rng.integers(0, shape[0] - ch + 1))
            left = int(rng.integers(0, shape[1] - cw + 1))
            if self.cat_max_ratio is None or gt is None:
                break
            win = gt[top:top + ch, left:left + cw]
            counts = np.bincount(win[win != self.ignore_index].ravel().astype(np.int64))
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
        return top, left

    def __call__(self, img: np.ndarray, gt: np.ndarray | None, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``uint8 [H, W, 3]``, ``[H, W]`` -> ``float32 [3, h, w]``, ``int64 [h, w]``."""
        if seed is None:
            raise ValueError("TrainTransform needs a per-sample seed")
        rng = np.random.default_rng(int(seed))
        ratio = float(rng.uniform(*self.scale_range))
        img, gt = rescale(img, gt, ratio)
        x = normalize(img, self.mean, self.std)
        x, gt = pad_to(x, gt, self.crop_size, self.ignore_index)
        top, left = self._crop_origin(rng, gt, x.shape[:2])
        x, gt = crop(x, gt, top, left, self.crop_size)
        if rng.random() < self.flip_prob:
            x, gt = hflip(x, gt)
        return to_tensors(x, gt)
