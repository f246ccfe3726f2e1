"""Constants of the deployed-model files (formats, metadata version, input convention) and their error."""

from __future__ import annotations

__all__ = ["FORMATS", "META_FILE", "EXPORT_VERSION", "INPUT_CONVENTION", "ModelFileError"]


FORMATS = ("pth", "torchscript", "onnx", "exported")
META_FILE = "segproto.json"
EXPORT_VERSION = 1
INPUT_CONVENTION = {
    "image": "float32 [N, 3, H, W], RGB, 0..255 (uint8 scale); (x - mean) / std is applied inside",
    "support_image": "hdmnet only: float32 [N, S, 3, H, W], as image",
    "support_mask": "hdmnet only: float32 [N, S, H, W], 1 = foreground, 0 = background",
    "output": "logits float32 [N, K, H, W] at the input size",
    "min_size": "torchscript/exported/onnx: H and W at least this (the backbone's largest stride + 1)",
}
_SUFFIX_FORMAT = {".onnx": "onnx", ".pt2": "exported", ".ts": "torchscript", ".torchscript": "torchscript",
                  ".pth": "pth", ".pt": "pth"}


class ModelFileError(RuntimeError):
    """A model file is missing, unreadable or not what its format promises (one-line message)."""
