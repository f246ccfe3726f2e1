"""Deployable models: one-file exports, :func:`load_model` and :func:`inference`.

A deployed model is the plain segmentor (or the bare HDMNet) behind its input normalisation, with
everything needed to use it: class names, palette, mean/std and the input convention. One file
holds it in each format (``python -m segproto.export``):

=============== ================================================================================
``pth``         ``torch.save`` dict: ``segmentor`` (state dict), ``meta`` (JSON-able, below),
                ``model_cfg``, ``classes``, ``palette``; read with ``torch.load(weights_only=True)``
``torchscript`` ``torch.jit.trace`` of the normalised model; ``meta`` in the archive's
                ``extra/segproto.json`` (``torch.jit.load(..., _extra_files=...)``)
``exported``    ``torch.export`` program (dynamic batch, height and width); ``meta`` in the
                archive's extra file ``segproto.json`` (``torch.export.load(..., extra_files=...)``)
``onnx``        ONNX graph (torch.onnx, dynamo exporter, one file with its weights); ``meta`` as
                the model's ``metadata_props["segproto"]``
=============== ================================================================================

Input convention of every format (``meta["input"]``): ``image`` float32 ``[N, 3, H, W]``, RGB,
values 0..255 (uint8 scale); the normalisation ``(x - mean) / std`` is inside the model. Output:
``logits`` float32 ``[N, K, H, W]`` at the input size. HDMNet takes ``(image, support_image
[N, S, 3, H, W], support_mask [N, S, H, W])`` (mask 1 = foreground) and gives ``[N, 2, H, W]``.

``meta`` keys: ``segproto_export`` (format version), ``kind`` (``segmentor`` | ``hdmnet``),
``classes``, ``palette``, ``mean``, ``std``, ``ignore_index``, ``input``, ``arch`` (how to rebuild
the network: ``model_cfg`` for a segmentor, ``hdmnet`` constructor arguments), ``method``,
``iter``, ``segproto`` (version).
"""

from .common import EXPORT_VERSION, FORMATS, INPUT_CONVENTION, META_FILE, ModelFileError
from .export import export_model, format_of, min_size
from .images import inference, read_mask, support_tensors, to_rgb
from .loading import config_label_space, detect_format, load_model, model_meta
from .networks import Normalized, NormalizedFewShot, SegModel, default_palette

__all__ = ["SegModel", "load_model", "inference", "export_model", "to_rgb", "read_mask", "support_tensors",
           "detect_format", "format_of", "min_size", "model_meta", "config_label_space", "default_palette",
           "Normalized", "NormalizedFewShot", "FORMATS", "META_FILE", "EXPORT_VERSION", "INPUT_CONVENTION",
           "ModelFileError"]
