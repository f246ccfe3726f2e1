"""The typed config schema: one ``@dataclass`` per YAML section.

The core sections are defined here; the methods' sections register themselves in
:mod:`segproto.config.sections` (one module per method) and :func:`_tree` builds ``LossConfig``
and ``Config`` from both, so a new method's section needs no line in this file. Loading,
validation, did-you-mean messages, overrides and saving pick every section up. A section may
define ``check(self) -> list[Issue]`` for value checks; each issue names the key relative to the
section (see the helpers :func:`bound` and :func:`nonempty`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .checks import Issue, bound, nonempty, same_length
from .sections import SECTIONS, load_sections, under

load_sections()
#: the methods' section classes, importable from here as from their own modules
globals().update({cls.__name__: cls for _, cls in SECTIONS.values()})

__all__ = ["Issue", "bound", "nonempty", "SyntheticConfig", "DataConfig", "ModelConfig", "MethodConfig",
           "CELossConfig", "LossConfig", "OptimConfig", "SchedConfig", "TrainConfig", "TestConfig", "Config",
           *sorted(cls.__name__ for _, cls in SECTIONS.values())]


@dataclass
class SyntheticConfig:
    """Procedurally generated dataset (no download; used by tests and the quickstart)."""

    num_train: int = 2000
    num_val: int = 300
    num_test: int = 300
    image_size: int = 128
    seed: int = 0

    def check(self) -> list[Issue]:
        return [*bound("num_train", self.num_train, ge=1), *bound("num_val", self.num_val, ge=0),
                *bound("num_test", self.num_test, ge=0),
                *bound("image_size", self.image_size, ge=1), *bound("seed", self.seed, ge=0)]


@dataclass
class DataConfig:
    """Dataset, label space and augmentation."""

    dataset: str = "synthetic"
    root: str = "data/synthetic"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    img_dir: Optional[str] = None      # None: the dataset's default ("img_dir/{subset}")
    ann_dir: Optional[str] = None      # None: the dataset's default ("ann_dir/{subset}")
    split_file: Optional[str] = None   # None: "splits/{split}.txt"
    list_file: Optional[str] = None    # "filelist" datasets only
    cat_max_ratio: Optional[float] = None
    img_suffix: Optional[str] = None       # None: the dataset's default (".png" for folder)
    seg_map_suffix: Optional[str] = None   # None: the dataset's default (".png" for folder)
    classes: Optional[list[str]] = None
    palette: Optional[list[list[int]]] = None
    reduce_zero_label: Optional[bool] = None  # None: the dataset's default (false; ADE20K true)
    taxonomy: Optional[str] = None
    level: int = 0
    train_split: str = "train"
    unlabeled_split: Optional[str] = None  # semi-supervised methods: e.g. "train_unlabeled_1-8"
    val_split: str = "val"
    test_split: str = "test"
    crop_size: tuple[int, int] = (128, 128)
    scale_range: tuple[float, float] = (0.75, 1.5)
    flip: bool = True
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    ignore_index: int = 255
    batch_size: int = 8
    val_batch_size: int = 8
    num_workers: int = 0

    def check(self) -> list[Issue]:
        issues = [*nonempty("dataset", self.dataset), *nonempty("taxonomy", self.taxonomy),
                  *nonempty("unlabeled_split", self.unlabeled_split),
                  *bound("crop_size", self.crop_size, ge=1),
                  *bound("scale_range", self.scale_range, gt=0),
                  *bound("std", self.std, gt=0), *bound("level", self.level, ge=0),
                  *bound("batch_size", self.batch_size, ge=1),
                  *bound("val_batch_size", self.val_batch_size, ge=1),
                  *bound("num_workers", self.num_workers, ge=0),
                  *same_length("palette", self.palette, "data.classes", self.classes)]
        if not issues and self.scale_range[0] > self.scale_range[1]:
            issues.append(("scale_range", f"must be [min, max] with min <= max, "
                                          f"got {list(self.scale_range)}"))
        if self.level > 0 and self.taxonomy is None:
            issues.append(("level", f"is {self.level} but 'data.taxonomy' is not set"))
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            issues.append(("classes", "has duplicate names"))
        for i, colour in enumerate(self.palette or []):
            if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
                issues.append((f"palette[{i}]", f"must be [r, g, b] in 0..255, got {colour}"))
        return issues


@dataclass
class ModelConfig:
    """Segmentor architecture and backbone."""

    arch: Literal["deeplabv3plus", "fcn"] = "deeplabv3plus"
    backbone: str = "resnet18"
    output_stride: Optional[Literal[8, 16, 32]] = 16   # None: the timm backbone's native strides
    pretrained: Optional[str] = None
    pretrained_strict: bool = True
    head_input: Optional[Literal["last", "concat"]] = None  # FCN input; None: "concat" for timm HRNets
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    channels: int = 256
    dropout: float = 0.1
    sync_bn: bool = False

    def check(self) -> list[Issue]:
        issues = [*nonempty("backbone", self.backbone), *nonempty("pretrained", self.pretrained),
                  *bound("channels", self.channels, ge=1),
                  *bound("dropout", self.dropout, ge=0, lt=1)]
        if self.backbone.startswith("timm:") and not self.backbone[5:].strip():
            issues.append(("backbone", f"must name a model after 'timm:', got {self.backbone!r}"))
        return issues


@dataclass
class MethodConfig:
    """Which method (model + losses) to train; methods add their own sections."""

    name: str = "ce"

    def check(self) -> list[Issue]:
        return nonempty("name", self.name)


@dataclass
class CELossConfig:
    """Pixel-wise cross-entropy."""

    weight: float = 1.0
    class_weight: Optional[list[float]] = None

    def check(self) -> list[Issue]:
        return [*bound("weight", self.weight, ge=0),
                *bound("class_weight", self.class_weight, ge=0)]


def _tree(name: str, doc: str, core: list[tuple[str, Any]], parent: str, after: str,
          namespace: Optional[dict[str, Any]] = None) -> type:
    """A config dataclass: the ``core`` fields (name, default value or section class) with the
    sections registered under ``parent`` (:mod:`.sections`) inserted after the field ``after``."""
    specs = []
    for key, value in core:
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            specs.append((key, value, field(default_factory=value)))
        else:
            specs.append((key, value[0], field(default=value[1])))
        if key == after:
            specs += [(k, cls, field(default_factory=cls)) for k, cls in under(parent)]
    cls = dataclasses.make_dataclass(name, specs, namespace={"__doc__": doc, **(namespace or {})})
    cls.__module__ = __name__
    return cls


LossConfig = _tree("LossConfig", "Loss terms: ``ce`` and the sections the methods register.",
                   [("ce", CELossConfig)], parent="loss", after="ce")


@dataclass
class OptimConfig:
    """Optimizer."""

    type: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    head_lr_mult: float = 1.0
    grad_clip: Optional[float] = None

    def check(self) -> list[Issue]:
        return [*bound("lr", self.lr, gt=0), *bound("momentum", self.momentum, ge=0, lt=1),
                *bound("weight_decay", self.weight_decay, ge=0),
                *bound("betas", self.betas, ge=0, lt=1),
                *bound("head_lr_mult", self.head_lr_mult, gt=0),
                *bound("grad_clip", self.grad_clip, gt=0)]


@dataclass
class SchedConfig:
    """Linear warm-up then poly decay: ``lr = (lr0 - min_lr) * (1 - t / T) ** power + min_lr``."""

    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    power: float = 0.9
    min_lr: float = 0.0

    def check(self) -> list[Issue]:
        return [*bound("warmup_iters", self.warmup_iters, ge=0),
                *bound("warmup_ratio", self.warmup_ratio, gt=0, le=1),
                *bound("power", self.power, ge=0), *bound("min_lr", self.min_lr, ge=0)]


@dataclass
class TrainConfig:
    """Iteration-based training loop, logging and checkpointing."""

    iters: int = 2000
    eval_interval: int = 500
    log_interval: int = 20
    checkpoint_interval: int = 500
    max_keep_ckpts: int = 2
    amp: bool = False
    tensorboard: bool = False
    progress_bar: bool = True
    load_from: Optional[str] = None

    def check(self) -> list[Issue]:
        issues = [*bound("iters", self.iters, ge=1),
                  *bound("eval_interval", self.eval_interval, ge=1),
                  *bound("log_interval", self.log_interval, ge=1),
                  *bound("checkpoint_interval", self.checkpoint_interval, ge=1),
                  *nonempty("load_from", self.load_from)]
        if self.max_keep_ckpts != -1 and self.max_keep_ckpts < 1:
            issues.append(("max_keep_ckpts", f"must be >= 1 or -1 (keep all), "
                                             f"got {self.max_keep_ckpts}"))
        return issues


@dataclass
class TestConfig:
    """How ``segproto.test`` and ``segproto.infer CONFIG CKPT`` run the segmentor (their
    ``--mode/--crop/--stride/--flip/--scales`` flags override it); mmseg semantics,
    ``segproto/tta.py``. The trainer's periodic evaluation is always one whole-image forward."""

    __test__ = False  # not a pytest test class

    mode: Literal["whole", "slide"] = "whole"
    crop: Optional[tuple[int, int]] = None     # slide: window (h, w)
    stride: Optional[tuple[int, int]] = None   # slide: window step (h, w)
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])

    def check(self) -> list[Issue]:
        issues = [*bound("crop", self.crop, ge=1), *bound("stride", self.stride, ge=1),
                  *bound("scales", self.scales, gt=0)]
        if not self.scales:
            issues.append(("scales", "must list at least one ratio"))
        if self.mode == "slide":
            issues += [(k, "is required when 'test.mode' is slide") for k, v in
                       (("crop", self.crop), ("stride", self.stride)) if v is None]
        return issues


def _check_config(self) -> list[Issue]:
    """Checks that span sections (per-section checks live in each section)."""
    issues = [*bound("seed", self.seed, ge=0, lt=2**32), *nonempty("work_dir", self.work_dir),
              *same_length("loss.ce.class_weight", self.loss.ce.class_weight,
                            "data.classes", self.data.classes)]
    if self.sched.min_lr > self.optim.lr:
        issues.append(("sched.min_lr", f"({self.sched.min_lr}) must be <= "
                                       f"'optim.lr' ({self.optim.lr})"))
    return issues


Config = _tree(
    "Config", "Root of the config tree (what :func:`segproto.config.load_config` returns).",
    [("seed", (int, 0)), ("deterministic", (bool, True)), ("work_dir", (Optional[str], None)),
     ("data", DataConfig), ("model", ModelConfig), ("method", MethodConfig), ("loss", LossConfig),
     ("optim", OptimConfig), ("sched", SchedConfig), ("train", TrainConfig), ("test", TestConfig)],
    parent="", after="loss", namespace={"check": _check_config})
