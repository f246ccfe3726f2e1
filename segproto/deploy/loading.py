"""Building a deployed model: the label space of a config without its dataset, the metadata of an
export, and :func:`load_model` for training checkpoints and every export format."""


from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .common import EXPORT_VERSION, INPUT_CONVENTION, META_FILE, ModelFileError
from .networks import Normalized, NormalizedFewShot, SegModel, _OnnxNet


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
        from segproto.data.synth.classes import FINE_NAMES, PALETTE

        names, palette = names or list(FINE_NAMES), palette or [list(c) for c in PALETTE]
        tax_file = tax_file or "taxonomy.yaml"
    if d.level > 0 or names is None:
        if not tax_file:
            return (list(names) if names else None), palette
        try:
            from segproto.data.pipeline.taxonomy import Taxonomy

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


def _check_config_fits(meta_in: dict, path: Path, cfg: Any) -> None:
    """A checkpoint rebuilt with a given config must come from a run of the same method; else one
    line says what it was trained with. (The class list is the checkpoint's: a config alone does
    not always know its classes without the dataset.)"""
    from segproto.config import config_to_dict
    from segproto.engine.loading import describe

    old_cfg, old_classes = meta_in.get("config") or {}, meta_in.get("classes")
    if old_cfg.get("method", {}).get("name") not in (None, cfg.method.name):
        raise ModelFileError(f"{path}: trained with {describe(old_cfg, old_classes)}; this config has "
                             f"{describe(config_to_dict(cfg), None)}; use the config of that run, or give the "
                             f"checkpoint alone (it holds its config)")


def _from_training_checkpoint(state: dict, path: Path, cfg: Any = None) -> SegModel:
    meta_in = state.get("meta") or {}
    if cfg is not None:
        _check_config_fits(meta_in, path, cfg)
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
    palette = None  # the training run's palette ("meta.palette") goes with its class names
    if getattr(cls, "episodic", False):
        classes = ["background", "foreground"]
    else:
        classes = meta_in.get("classes") or config_label_space(cfg)[0]
        if meta_in.get("classes") and len(meta_in.get("palette") or []) == len(classes):
            palette = meta_in["palette"]
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
    meta = model_meta(cfg, classes, palette, iteration=meta_in.get("iter"))
    return SegModel(_wrap(net, meta), meta, "checkpoint")


def _from_export_dict(state: dict, path: Path) -> SegModel:
    meta = state.get("meta")
    if meta is None:  # the plain pth layout without metadata: a segmentor with default statistics
        if "down_query.0.weight" in state["segmentor"]:
            raise ModelFileError(f"{path}: HDMNet weights without 'meta' (its architecture); export the "
                                 f"checkpoint again with python -m segproto.export")
        from segproto.data.pipeline.transforms import IMAGENET_MEAN, IMAGENET_STD

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
    from segproto.utils.checkpoint import CheckpointError, read_state

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
