"""The deployed networks: the segmentor or HDMNet behind its input normalisation, the ONNX
wrapper, and :class:`SegModel` (a network with its class names, palette and metadata)."""


from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .common import ModelFileError


# --- the deployed network --------------------------------------------------------------------------

class Normalized(nn.Module):
    """``net((image - mean) / std)``: raw RGB 0..255 in, logits out (what every format holds)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        return self.net((image - self.mean) / self.std)


class NormalizedFewShot(Normalized):
    """HDMNet with normalisation: ``(image, support_image, support_mask) -> [N, 2, H, W]`` logits."""

    def forward(self, image: Tensor, support_image: Tensor, support_mask: Tensor) -> Tensor:  # type: ignore[override]
        q = (image - self.mean) / self.std
        s = (support_image - self.mean[:, None]) / self.std[:, None]
        return self.net(q, s, support_mask)["logits"]


class _OnnxNet(nn.Module):
    """An onnxruntime session as a module (numpy in and out; the tensors' device is kept)."""

    def __init__(self, path: Path, device: Optional[str] = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelFileError(f"{path}: ONNX models need onnxruntime (pip install 'segproto[export]')") from exc
        providers = ["CPUExecutionProvider"]
        if device is not None and str(device).startswith("cuda"):
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"{path}: onnxruntime cannot load the model ({str(exc).splitlines()[0]})") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: Tensor) -> Tensor:
        feed = {n: x.detach().float().cpu().numpy() for n, x in zip(self.input_names, inputs)}
        out = self.session.run(None, feed)[0]
        return torch.from_numpy(out).to(inputs[0].device)


class SegModel(nn.Module):
    """A deployed model with its preprocessing and label space (what :func:`load_model` returns).

    ``model(image)`` takes raw RGB ``[N, 3, H, W]`` in 0..255 (float) and returns logits
    ``[N, K, H, W]``; an HDMNet model takes ``model(image, support_image, support_mask)``.

    Attributes:
        classes: Class names (K). palette: ``[[r, g, b]] * K``. mean, std: the normalisation
        inside the model. kind: ``"segmentor"`` or ``"hdmnet"``. format: where it came from
        (``checkpoint`` or one of :data:`FORMATS`). meta: the export metadata.
    """

    def __init__(self, net: nn.Module, meta: dict, fmt: str) -> None:
        super().__init__()
        self.net = net
        self.meta = meta
        self.format = fmt
        self.eval()

    classes = property(lambda self: list(self.meta["classes"]))
    num_classes = property(lambda self: len(self.meta["classes"]))
    kind = property(lambda self: self.meta["kind"])
    mean = property(lambda self: list(self.meta["mean"]))
    std = property(lambda self: list(self.meta["std"]))

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in (self.meta.get("palette") or default_palette(self.num_classes))]

    @property
    def device(self) -> torch.device:
        for t in (*self.net.parameters(), *self.net.buffers()):
            return t.device
        return torch.device("cpu")

    def train(self, mode: bool = True) -> "SegModel":
        """Only eval mode is meaningful for a deployed model; programs from ``torch.export`` and
        ONNX sessions have no mode and are left alone."""
        self.training = mode
        if self.format not in ("exported", "onnx"):
            self.net.train(mode)
        return self

    def forward(self, image: Tensor, support_image: Optional[Tensor] = None,
                support_mask: Optional[Tensor] = None) -> Tensor:
        if self.kind == "hdmnet":
            if support_image is None or support_mask is None:
                raise ValueError("an HDMNet model needs support_image [N, S, 3, H, W] and support_mask [N, S, H, W]")
            return self.net(image, support_image, support_mask.float())
        return self.net(image)

    def deployable(self) -> nn.Module:
        """The normalised network (a :class:`Normalized` module for ``checkpoint`` and ``pth``)."""
        return self.net


def default_palette(k: int) -> list[list[int]]:
    """A fixed, distinguishable palette when the dataset defines none."""
    rng = np.random.default_rng(0)
    return [[int(c) for c in rng.integers(0, 256, 3)] for _ in range(k)]
