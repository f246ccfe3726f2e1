"""One-file exports of a :class:`SegModel` in every format (:func:`export_model`)."""


from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .common import EXPORT_VERSION, FORMATS, META_FILE, ModelFileError, _SUFFIX_FORMAT
from .networks import SegModel


# --- export -----------------------------------------------------------------------------------------

def format_of(out: Union[str, Path], fmt: Optional[str] = None) -> str:
    """``fmt`` if given, else from the suffix (``.onnx``, ``.pt2``: exported, ``.ts``: torchscript,
    anything else: pth)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"--format: expected one of {FORMATS}, got {fmt!r}")
        return fmt
    return _SUFFIX_FORMAT.get(Path(out).suffix.lower(), "pth")


def _example_inputs(meta: dict, size: Sequence[int]) -> tuple[Tensor, ...]:
    """A batch of 2 (a batch of 1 would be specialised to 1 by torch.export)."""
    h, w = size
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, h, w, generator=g) * 255
    if meta["kind"] != "hdmnet":
        return (img,)
    sup = torch.rand(2, 1, 3, h, w, generator=g) * 255
    mask = torch.zeros(2, 1, h, w)
    mask[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    return img, sup, mask


def min_size(net: nn.Module) -> int:
    """Smallest height and width the exported graph accepts: one more than the backbone's largest
    stride (a 1x1 deepest feature map is a special case the traced graph does not cover)."""
    inner = getattr(net, "net", net)
    strides = getattr(getattr(inner, "backbone", None), "strides", None) or [32]
    return int(max(strides)) + 1


def _dynamic_shapes(meta: dict, smallest: int) -> dict:
    batch = torch.export.Dim("batch", min=1, max=4096)
    h = torch.export.Dim("height", min=smallest, max=16384)
    w = torch.export.Dim("width", min=smallest, max=16384)
    shapes = {"image": {0: batch, 2: h, 3: w}}
    if meta["kind"] == "hdmnet":
        shots = torch.export.Dim("shots", min=1, max=64)
        shapes.update(support_image={0: batch, 1: shots, 3: h, 4: w}, support_mask={0: batch, 1: shots, 2: h, 3: w})
    return shapes


def export_model(model: SegModel, out: Union[str, Path], fmt: Optional[str] = None,
                 example_size: Sequence[int] = (67, 75)) -> Path:
    """Writes ``model`` (from :func:`load_model` of a checkpoint or a ``pth`` export) as one file.

    Args:
        model: A model whose network is a PyTorch module (``checkpoint`` or ``pth`` format).
        out: The file; written whole or not at all (temp file + rename).
        fmt: One of :data:`FORMATS` (default: from the suffix, see :func:`format_of`).
        example_size: ``(H, W)`` of the example input that traces the graph; height and width
            stay dynamic in ``exported`` and ``onnx``, and ``torchscript`` traces only shape-generic ops.

    Returns:
        The written path.
    """
    from segproto.utils.checkpoint import atomic_torch_save

    fmt = format_of(out, fmt)
    if model.format not in ("checkpoint", "pth"):
        raise ValueError(f"export: the model comes from a {model.format} file; export from a checkpoint or a pth export")
    if model.kind == "hdmnet" and fmt != "pth":
        raise ValueError(f"--format {fmt}: HDMNet exports as pth only (its tiled matching is a custom autograd "
                         f"function and its prior a compiled op, which TorchScript, torch.export and ONNX "
                         f"cannot record); use --format pth")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = model.deployable().cpu().eval()
    meta = dict(model.meta)
    if fmt != "pth":
        meta["input"] = {**meta["input"], "min_size": min_size(net)}
    blob = json.dumps(meta)
    if fmt == "pth":
        state = {"segproto_export": EXPORT_VERSION, "meta": meta, "segmentor": net.net.state_dict(),
                 "classes": meta["classes"], "palette": meta["palette"]}
        if meta["kind"] == "segmentor":
            state["model_cfg"] = meta["arch"]["model_cfg"]
        return atomic_torch_save(state, out)
    example = _example_inputs(meta, example_size)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")  # torch.export wants its suffix
    try:
        with torch.no_grad():
            if fmt == "torchscript":
                with warnings.catch_warnings():  # TorchScript is deprecated upstream; the format is asked for
                    warnings.simplefilter("ignore", FutureWarning)
                    traced = torch.jit.trace(net, example, check_trace=False)
                    torch.jit.save(traced, str(tmp), _extra_files={META_FILE: blob})
            elif fmt == "exported":
                program = torch.export.export(net, example, dynamic_shapes=_dynamic_shapes(meta, min_size(net)))
                torch.export.save(program, str(tmp), extra_files={META_FILE: blob})
            else:
                _export_onnx(net, example, meta, tmp, blob)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _export_onnx(net: nn.Module, example: tuple, meta: dict, tmp: Path, blob: str) -> None:
    try:
        import onnx
    except ImportError as exc:
        raise ModelFileError("--format onnx needs onnx, onnxscript and onnxruntime (pip install 'segproto[export]')") from exc
    names = ["image", "support_image", "support_mask"][: len(example)]
    program = torch.onnx.export(net, example, None, input_names=names, output_names=["logits"],
                                dynamic_shapes=_dynamic_shapes(meta, min_size(net)), dynamo=True, verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "segproto", blob
    onnx.save_model(proto, str(tmp), save_as_external_data=False)
