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

from __future__ import annotations

import dataclasses
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segproto.tta import TestMode, predict

__all__ = ["SegModel", "load_model", "inference", "export_model", "to_rgb", "FORMATS", "detect_format",
           "ModelFileError"]

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


# --- label space without the dataset --------------------------------------------------------------

def config_label_space(cfg: Any) -> tuple[Optional[list[str]], Optional[list[list[int]]]]:
    """Class names and palette at ``data.level`` from the config alone (no dataset is built or
    generated): ``data.classes``/``data.palette``, the dataset kind's defaults (Cityscapes, the
    built-in benchmark, ...), or the taxonomy file when it is readable. ``(None, None)`` when the
    config does not say."""
    from segproto.data.build import DATASET_KINDS, taxonomy_path

    d = cfg.data
    names, palette = d.classes, d.palette
    kind = DATASET_KINDS.get(d.dataset)
    if names is None and kind is not None:
        names, palette = kind.defaults.get("classes"), palette or kind.defaults.get("palette")
    tax_file = d.taxonomy
    if d.dataset == "synthetic":
        from segproto.data.synth_classes import FINE_NAMES, PALETTE

        names, palette = names or list(FINE_NAMES), palette or [list(c) for c in PALETTE]
        tax_file = tax_file or "taxonomy.yaml"
    if d.level > 0 or names is None:
        if not tax_file:
            return (list(names) if names else None), palette
        try:
            from segproto.data.taxonomy import Taxonomy

            tax = Taxonomy.from_yaml(taxonomy_path(tax_file, Path(d.root).expanduser().absolute()))
        except (OSError, ValueError, KeyError):
            return (None, None) if d.level > 0 else ((list(names) if names else None), palette)
        return tax.class_names(d.level), tax.palette(d.level)
    return list(names), ([list(c) for c in palette] if palette else None)


def _palette_for(classes: Sequence[str], names: Optional[Sequence[str]], palette) -> Optional[list]:
    """The colours of ``classes`` looked up by name in ``(names, palette)``; None if any is missing."""
    if not names or not palette or len(names) != len(palette):
        return None
    lut = {n: list(c) for n, c in zip(names, palette)}
    return [lut[c] for c in classes] if all(c in lut for c in classes) else None


# --- building and loading ---------------------------------------------------------------------------

def _method_class(name: str):
    from segproto.methods import METHODS

    if name not in METHODS:
        raise ModelFileError(f"method.name: unknown method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name].__self__


def _build_net(meta: dict) -> nn.Module:
    """The bare network described by ``meta["arch"]`` (weights not loaded)."""
    if meta["kind"] == "hdmnet":
        from segproto.models.hdmnet import HDMNet

        return HDMNet(**meta["arch"]["hdmnet"])
    from segproto.models import build_segmentor

    return build_segmentor({**meta["arch"]["model_cfg"], "pretrained": None, "sync_bn": False},
                           len(meta["classes"]))


def _load_weights(net: nn.Module, state: dict, source: str) -> None:
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(
            f"{source}: weights do not fit the architecture: missing {len(result.missing_keys)} "
            f"{result.missing_keys[:3]}, unexpected {len(result.unexpected_keys)} {result.unexpected_keys[:3]} "
            f"(expected the state dict of the model its config describes)")


def _wrap(net: nn.Module, meta: dict) -> nn.Module:
    cls = NormalizedFewShot if meta["kind"] == "hdmnet" else Normalized
    return cls(net, meta["mean"], meta["std"])


def model_meta(cfg: Any, classes: Sequence[str], palette=None, iteration: Optional[int] = None) -> dict:
    """The export metadata of a config's deployable model with ``classes``."""
    import segproto
    from segproto.config import config_to_dict
    from segproto.methods.hdmnet import hdmnet_kwargs

    episodic = cfg.method.name == "hdmnet"
    if episodic:
        arch = {"hdmnet": hdmnet_kwargs(cfg, pretrained=False)}
    else:
        model_cfg = config_to_dict(cfg)["model"]
        model_cfg.update(pretrained=None, sync_bn=False)
        arch = {"model_cfg": model_cfg}
    if palette is None:
        names, pal = config_label_space(cfg) if not episodic else (None, None)
        palette = _palette_for(classes, names, pal)
    if episodic and palette is None:
        palette = [[0, 0, 0], [255, 0, 0]]
    return {"segproto_export": EXPORT_VERSION, "kind": "hdmnet" if episodic else "segmentor",
            "classes": list(classes), "palette": [list(map(int, c)) for c in palette] if palette else None,
            "mean": [float(v) for v in cfg.data.mean], "std": [float(v) for v in cfg.data.std],
            "ignore_index": int(cfg.data.ignore_index), "input": dict(INPUT_CONVENTION), "arch": arch,
            "method": cfg.method.name, "iter": iteration, "segproto": segproto.__version__}


def _from_training_checkpoint(state: dict, path: Path, cfg: Any = None) -> SegModel:
    meta_in = state.get("meta") or {}
    if cfg is None:
        if "config" not in meta_in:
            raise ModelFileError(f"{path}: training checkpoint without 'meta.config'; give the config too "
                                 f"(python -m segproto.infer CONFIG CKPT IMAGES...)")
        from segproto.config import ConfigError, config_from_dict

        try:
            cfg = config_from_dict(meta_in["config"], source=f"{path} (meta.config)")
        except ConfigError as exc:
            raise ModelFileError(str(exc).splitlines()[0]) from exc
    cls = _method_class(cfg.method.name)
    if getattr(cls, "episodic", False):
        classes = ["background", "foreground"]
    else:
        classes = meta_in.get("classes") or config_label_space(cfg)[0]
        if not classes:
            raise ModelFileError(f"{path}: no class names in the checkpoint's meta or in the config "
                                 f"(expected 'meta.classes' or data.classes)")
    net = cls.build_deployable(cfg, len(classes))
    prefix = cls.deployable_key(cfg) + "."
    sub = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not sub:
        raise ModelFileError(f"{path}: no '{prefix}*' weights in 'model' (expected a checkpoint of a "
                             f"'{cfg.method.name}' run; keys start like {sorted(state['model'])[:3]})")
    _load_weights(net, sub, f"{path} ('model' entries '{prefix}*')")
    meta = model_meta(cfg, classes, iteration=meta_in.get("iter"))
    return SegModel(_wrap(net, meta), meta, "checkpoint")


def _from_export_dict(state: dict, path: Path) -> SegModel:
    meta = state.get("meta")
    if meta is None:  # the plain pth layout without metadata: a segmentor with default statistics
        if "down_query.0.weight" in state["segmentor"]:
            raise ModelFileError(f"{path}: HDMNet weights without 'meta' (its architecture); export the "
                                 f"checkpoint again with python -m segproto.export")
        from segproto.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        meta = {"segproto_export": 0, "kind": "segmentor", "classes": list(state["classes"]),
                "palette": state.get("palette"), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "ignore_index": 255, "input": dict(INPUT_CONVENTION), "arch": {"model_cfg": dict(state["model_cfg"])}}
    net = _build_net(meta)
    _load_weights(net, state["segmentor"], f"{path} ('segmentor')")
    return SegModel(_wrap(net, meta), meta, "pth")


def detect_format(path: Union[str, Path]) -> str:
    """``checkpoint``/``pth`` (``torch.save`` archives), ``torchscript``, ``exported`` or ``onnx``,
    from the file's content (the suffix does not matter)."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.split("/", 1)[-1] == "archive_format" for n in names):
            return "exported"
        if any("/code/" in n for n in names):
            return "torchscript"
        return "pth"
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version), varint: an ONNX ModelProto
        return "onnx"
    return "pth"  # legacy torch.save (non-zip) files


def load_model(path: Union[str, Path], device: Union[str, torch.device, None] = None, config: Any = None) -> SegModel:
    """A training checkpoint or an export of any format, in eval mode, with its preprocessing.

    Neither the config nor the dataset is needed: a training checkpoint carries its config and class
    names, an export its whole description. Pass ``config`` (a loaded config) to rebuild a checkpoint
    with another config than the one it holds (the ``CONFIG CKPT`` form of the entry points).

    Args:
        path: ``iter_N.pth``, ``best_mIoU_iter_N.pth``, or a ``python -m segproto.export`` output.
        device: Where to run (default: CUDA when available, else CPU). ``exported`` programs run
            on the device they were exported on (CPU).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ModelFileError: One line naming the file and what was expected.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path} (expected a checkpoint or an exported model file)")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fmt = detect_format(path)
    if fmt == "onnx":
        try:
            import onnx
        except ImportError as exc:
            raise ModelFileError(f"{path}: ONNX models need onnx and onnxruntime "
                                 f"(pip install 'segproto[export]')") from exc
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if "segproto" not in props:
            raise ModelFileError(f"{path}: ONNX model without 'segproto' metadata (expected a python -m "
                                 f"segproto.export output)")
        return SegModel(_OnnxNet(path, str(dev)), json.loads(props["segproto"]), "onnx")
    if fmt == "torchscript":
        extra = {META_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location=dev, _extra_files=extra)
        except Exception as exc:
            raise ModelFileError(f"{path}: cannot read TorchScript archive ({str(exc).splitlines()[0]})") from exc
        if not extra[META_FILE]:
            raise ModelFileError(f"{path}: TorchScript archive without extra/{META_FILE} (expected a python -m "
                                 f"segproto.export output)")
        return SegModel(net, json.loads(extra[META_FILE]), "torchscript")
    if fmt == "exported":
        extra = {META_FILE: ""}
        try:
            program = torch.export.load(str(path), extra_files=extra)
        except Exception as exc:
            raise ModelFileError(f"{path}: cannot read torch.export archive ({str(exc).splitlines()[0]})") from exc
        if not extra[META_FILE]:
            raise ModelFileError(f"{path}: torch.export archive without {META_FILE} (expected a python -m "
                                 f"segproto.export output)")
        return SegModel(program.module(), json.loads(extra[META_FILE]), "exported")
    from segproto.engine.checkpoint import CheckpointError, read_state

    try:
        state = read_state(path)
    except CheckpointError as exc:
        raise ModelFileError(str(exc).splitlines()[0]) from exc
    if isinstance(state, dict) and "segmentor" in state and config is None:
        model = _from_export_dict(state, path)
    elif isinstance(state, dict) and "segmentor" in state:
        model = _from_config_and_export(state, path, config)
    elif isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        model = _from_training_checkpoint(state, path, config)
    else:
        raise ModelFileError(f"{path}: neither a segproto training checkpoint (no 'model' entry) nor an exported "
                             f"model (no 'segmentor' entry)")
    return model.to(dev)


def _from_config_and_export(state: dict, path: Path, cfg: Any) -> SegModel:
    """A ``pth`` export rebuilt with a given config (the file's own metadata when it has some)."""
    if state.get("meta") is not None:
        return _from_export_dict(state, path)
    cls = _method_class(cfg.method.name)
    classes = (["background", "foreground"] if getattr(cls, "episodic", False)
               else list(state.get("classes") or config_label_space(cfg)[0] or []))
    meta = model_meta(cfg, classes, palette=state.get("palette"))
    net = cls.build_deployable(cfg, len(classes))
    _load_weights(net, state["segmentor"], f"{path} ('segmentor')")
    return SegModel(_wrap(net, meta), meta, "pth")


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
    from segproto.engine.checkpoint import atomic_torch_save

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
