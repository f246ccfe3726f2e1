"""Test-time modes: whole image, sliding window, horizontal flip and multi-scale (mmseg semantics).

Every mode wraps a function ``fn(img [B, 3, h, w]) -> logits [B, K, h, w]`` (a segmentor in eval
mode, a loaded export, an ONNX session): the modes never look inside the model, so the same code
serves evaluation (``python -m segproto.test``), ``segproto.inference`` and ``python -m
segproto.infer``.

* ``slide`` (mmseg ``EncoderDecoder.slide_inference``): windows of ``crop = (h_crop, w_crop)``
  every ``stride = (h_stride, w_stride)``; ``h_grids = max(H - h_crop + h_stride - 1, 0) //
  h_stride + 1`` (the same for w); the last window of a row or column is shifted back to end at the
  border; overlapping window logits are averaged. An image no larger than the window is one window:
  identical to ``whole``.
* ``flip`` and ``scales`` (mmseg's test-time augmentation): the image is resized by each ratio
  (bilinear, ``align_corners=False``; ratios relative to the input size) and, with ``flip``, also
  flipped left-right; each view's logits (whole or slide) are flipped back, resized to the input
  size, and their softmax probabilities averaged. With one view the logits are returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["TestMode", "predict", "slide_logits"]


@dataclass(frozen=True)
class TestMode:
    """How a segmentor is run at test time.

    Attributes:
        mode: ``"whole"`` (one forward at the image size) or ``"slide"``.
        crop: ``(h, w)`` window of ``slide``.
        stride: ``(h, w)`` window step of ``slide``.
        flip: Also run the left-right flipped image and average.
        scales: Resize ratios of the image (multi-scale when more than one).
    """

    __test__ = False  # not a pytest test class

    mode: str = "whole"
    crop: Optional[tuple[int, int]] = None
    stride: Optional[tuple[int, int]] = None
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"test mode: expected 'whole' or 'slide', got {self.mode!r}")
        if self.mode == "slide":
            for key, v in (("crop", self.crop), ("stride", self.stride)):
                if v is None or len(v) != 2 or min(int(x) for x in v) < 1:
                    raise ValueError(f"test mode slide: '{key}' must be two positive ints (h, w), got {v!r}")
            object.__setattr__(self, "crop", tuple(int(x) for x in self.crop))
            object.__setattr__(self, "stride", tuple(int(x) for x in self.stride))
        scales = tuple(float(s) for s in self.scales)
        if not scales or min(scales) <= 0:
            raise ValueError(f"test mode: 'scales' must be positive ratios, got {list(self.scales)}")
        object.__setattr__(self, "scales", scales)

    @property
    def views(self) -> int:
        """Number of forwards of ``fn`` per image (windows aside)."""
        return len(self.scales) * (2 if self.flip else 1)

    @property
    def plain(self) -> bool:
        """True when the mode is one whole-image forward."""
        return self.mode == "whole" and self.views == 1 and self.scales == (1.0,)


def slide_logits(fn: Callable[[Tensor], Tensor], img: Tensor, crop: Sequence[int], stride: Sequence[int]) -> Tensor:
    """Sliding-window logits ``[B, K, H, W]`` of ``img [B, 3, H, W]`` (mmseg ``slide_inference``)."""
    h_crop, w_crop = crop
    h_stride, w_stride = stride
    b, _, h_img, w_img = img.shape
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds: Optional[Tensor] = None
    count = img.new_zeros((1, 1, h_img, w_img))
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * h_stride, wi * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            logits = fn(img[:, :, y1:y2, x1:x2])
            if preds is None:
                preds = logits.new_zeros((b, logits.shape[1], h_img, w_img))
            preds[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def predict(fn: Callable[[Tensor], Tensor], img: Tensor, mode: Optional[TestMode] = None) -> tuple[Tensor, bool]:
    """Scores ``[B, K, H, W]`` of ``img [B, 3, H, W]`` under a test mode.

    Returns:
        ``(scores, are_probs)``: logits (``are_probs`` False) for a single view, else the mean of the
        views' softmax probabilities (True). The argmax over dim 1 is the prediction either way.
    """
    mode = mode or TestMode()
    size = img.shape[-2:]

    def run(x: Tensor) -> Tensor:
        return slide_logits(fn, x, mode.crop, mode.stride) if mode.mode == "slide" else fn(x)

    if mode.views == 1:
        s = mode.scales[0]
        x = img if s == 1.0 else _resize(img, _scaled(size, s))
        return _resize(run(x), size), False
    total: Optional[Tensor] = None
    for s in mode.scales:
        x = img if s == 1.0 else _resize(img, _scaled(size, s))
        for flipped in ((False, True) if mode.flip else (False,)):
            logits = run(x.flip(-1)) if flipped else run(x)
            if flipped:
                logits = logits.flip(-1)
            logits = _resize(logits, size)
            p = (logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits).softmax(1)
            total = p if total is None else total + p
    return total / mode.views, True


def _scaled(size: Sequence[int], ratio: float) -> tuple[int, int]:
    """mmseg's ``int(dim * ratio + 0.5)``, at least 1."""
    return max(int(size[0] * ratio + 0.5), 1), max(int(size[1] * ratio + 0.5), 1)
