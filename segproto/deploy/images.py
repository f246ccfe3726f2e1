"""Images in, label maps out: reading any image or mask (path, PIL, numpy, tensor; RGB, RGBA,
grayscale, 16-bit), few-shot support tensors, and :func:`inference`."""


from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from segproto.tta import TestMode, predict

from .loading import load_model
from .networks import SegModel


# --- images and inference --------------------------------------------------------------------------

ImageLike = Union[str, Path, "np.ndarray", Tensor, Any]


def _name(image: Any) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"<{type(image).__name__}>"


def to_rgb(image: ImageLike) -> np.ndarray:
    """Any supported image as float32 ``[H, W, 3]`` RGB in 0..255.

    Accepts a path, a PIL image, a numpy array (``[H, W]``, ``[H, W, 1|3|4]``) or a tensor
    (``[H, W]``, ``[1|3|4, H, W]``, ``[1, C, H, W]``). Grayscale is repeated to three channels,
    alpha is dropped, palette images are expanded, 16-bit values are scaled to 0..255
    (``v / 257``); uint8 and float values are taken as 0..255.

    Raises:
        FileNotFoundError: A missing path. ValueError: One line naming the image and what was expected.
    """
    from PIL import Image, UnidentifiedImageError

    name = _name(image)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            with Image.open(path) as im:
                im.load()
                return _pil_rgb(im, name)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(f"{path}: cannot read image ({exc})") from exc
    if isinstance(image, Image.Image):
        return _pil_rgb(image, name)
    if isinstance(image, Tensor):
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        if t.dtype in (torch.uint16, torch.int16, torch.int32, torch.int64, torch.uint8, torch.float16,
                       torch.bfloat16, torch.float32, torch.float64, torch.bool):
            image = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
    if isinstance(image, np.ndarray):
        return _array_rgb(image, name)
    raise ValueError(f"{name}: unsupported image type (expected a path, PIL image, numpy array or tensor)")


def _pil_rgb(im, name: str) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if mode.startswith("I;16") or (mode == "I" and arr.size and arr.max() > 255):
            arr = arr.astype(np.float32) / 257.0  # 16-bit grayscale -> 0..255
        return _array_rgb(arr.astype(np.float32), name)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"), dtype=np.float32)[..., :3].copy()
    return np.asarray(im if mode == "RGB" else im.convert("RGB"), dtype=np.float32).copy()


def _array_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"{name}: image of shape {tuple(arr.shape)}; expected [H, W], [H, W, 1|3|4] "
                         f"(tensors: [1|3|4, H, W])")
    arr = arr[..., :3]
    if arr.dtype == np.uint16:
        return (arr.astype(np.float32) / 257.0).copy()
    if arr.dtype == np.bool_:
        raise ValueError(f"{name}: boolean image; expected uint8, uint16 or float values")
    out = arr.astype(np.float32)
    if out.size and (out.min() < 0 or out.max() > 255) and arr.dtype != np.uint8:
        raise ValueError(f"{name}: {arr.dtype} values in [{out.min():g}, {out.max():g}]; expected 0..255 "
                         f"(uint16 images are scaled by 1/257)")
    return out.copy()


def read_mask(mask: ImageLike) -> np.ndarray:
    """A support mask as ``uint8 [H, W]`` in {0, 1}: every non-zero pixel is foreground (0/1 and
    0/255 masks both work; colour masks are reduced to their non-black pixels)."""
    from PIL import Image

    if isinstance(mask, (str, Path)):
        path = Path(mask)
        if not path.is_file():
            raise FileNotFoundError(f"mask not found: {path}")
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    elif isinstance(mask, Image.Image):
        arr = np.asarray(mask)
    elif isinstance(mask, Tensor):
        arr = mask.detach().cpu().numpy()
    else:
        arr = np.asarray(mask)
    if arr.ndim == 3:
        arr = arr[..., :3].max(-1) if arr.shape[-1] in (3, 4) else arr.max(0)
    if arr.ndim != 2:
        raise ValueError(f"{_name(mask)}: mask of shape {tuple(arr.shape)}; expected [H, W]")
    return (arr != 0).astype(np.uint8)


def support_tensors(support: Sequence[tuple[ImageLike, ImageLike]], size: Sequence[int],
                    device: torch.device) -> tuple[Tensor, Tensor]:
    """``[(image, mask)] * S`` -> ``support_image [1, S, 3, H, W]`` and ``support_mask [1, S, H, W]``
    at the query's size (bilinear image, nearest mask, as the episodic evaluation)."""
    imgs, masks = [], []
    for img, mask in support:
        x = torch.from_numpy(to_rgb(img)).permute(2, 0, 1)[None]
        m = torch.from_numpy(read_mask(mask)).float()[None, None]
        if m.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"{_name(mask)}: mask {tuple(m.shape[-2:])} and image {_name(img)} "
                             f"{tuple(x.shape[-2:])} differ in size; expected the image's mask")
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
            m = F.interpolate(m, size=tuple(size), mode="nearest")
        imgs.append(x[0])
        masks.append(m[0, 0])
    return torch.stack(imgs)[None].to(device), torch.stack(masks)[None].to(device)


@torch.no_grad()
def inference(model: Union[SegModel, str, Path], image: ImageLike, *, probs: bool = False,
              test_mode: Optional[TestMode] = None, support: Optional[Sequence[tuple]] = None):
    """Segments one image (mmseg's ``inference_model``).

    Args:
        model: A :class:`SegModel` (:func:`load_model`) or a path to load.
        image: Path, PIL image, numpy array or tensor (see :func:`to_rgb`): RGB, RGBA, grayscale,
            palette or 16-bit.
        probs: Also return the class probabilities.
        test_mode: Sliding window / flip / multi-scale (:class:`segproto.tta.TestMode`); default
            one whole-image forward.
        support: HDMNet models: ``[(image, mask), ...]``, the annotated support images of the class
            to find (masks: non-zero = foreground).

    Returns:
        The label map, int64 ``[H, W]`` at the input's size; with ``probs``, ``(labels, probs)``
        where ``probs`` is float32 ``[K, H, W]``.
    """
    if not isinstance(model, SegModel):
        model = load_model(model)
    rgb = to_rgb(image)
    dev = model.device
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(dev)
    if model.kind == "hdmnet":
        if not support:
            raise ValueError("inference: an HDMNet model needs support=[(image, mask), ...] (at least one shot)")
        if test_mode is not None and not test_mode.plain:
            raise ValueError("inference: test modes (slide, flip, scales) apply to segmentors, not to HDMNet")
        s_img, s_mask = support_tensors(support, rgb.shape[:2], dev)
        scores, are_probs = model(x, s_img, s_mask), False
    else:
        scores, are_probs = predict(model, x, test_mode)
    labels = scores.argmax(1)[0].cpu().numpy().astype(np.int64)
    if not probs:
        return labels
    p = scores if are_probs else scores.float().softmax(1)
    return labels, p[0].float().cpu().numpy()
