"""The typed config schema: one ``@dataclass`` per YAML section.

To add a section for a new method, add a dataclass and a field for it, e.g. in
:class:`LossConfig`::

    contrast: ContrastLossConfig = field(default_factory=ContrastLossConfig)
    hiposeg: HiPoSegLossConfig = field(default_factory=HiPoSegLossConfig)
    prcl: PRCLLossConfig = field(default_factory=PRCLLossConfig)

Loading, validation, did-you-mean messages, overrides and saving pick it up automatically.
A section may define ``check(self) -> list[Issue]`` for value checks; each issue names the
key relative to the section (see the helpers :func:`bound` and :func:`nonempty`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

Issue = tuple[str, str]  # (dotted key relative to the section, message)


def bound(key: str, value: Any, *, gt: float | None = None, ge: float | None = None,
          lt: float | None = None, le: float | None = None) -> list[Issue]:
    """Check a number (or every number of a tuple/list) against bounds; ``None`` passes.

    Written as ``not (v > gt)`` so that NaN fails every bound.
    """
    if value is None:
        return []
    for v in value if isinstance(value, (tuple, list)) else [value]:
        for ok, text in ((gt is None or v > gt, f"> {gt}"), (ge is None or v >= ge, f">= {ge}"),
                         (lt is None or v < lt, f"< {lt}"), (le is None or v <= le, f"<= {le}")):
            if not ok:
                what = "every item must be" if isinstance(value, (tuple, list)) else "must be"
                return [(key, f"{what} {text}, got {value!r}")]
    return []


def nonempty(key: str, value: Optional[str]) -> list[Issue]:
    """A string option that must not be empty (``None`` passes)."""
    return [(key, "must not be empty")] if value is not None and not value.strip() else []


def _same_length(key: str, value: Optional[Sequence], other_key: str,
                 other: Optional[Sequence]) -> list[Issue]:
    if value is None or other is None or len(value) == len(other):
        return []
    return [(key, f"has {len(value)} items but '{other_key}' has {len(other)}")]


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
                  *_same_length("palette", self.palette, "data.classes", self.classes)]
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


@dataclass
class ContrastLossConfig:
    """PiCo pixel contrast (``method.name: pico``; docs/methods/pico.md). Paper-only features
    (``sampling`` other than "all", negative synthesis) are off by default."""

    weight: float = 0.1                 # loss weight (memory version of the paper: 1.0)
    temperature: float = 0.1            # T (memory version: 0.07)
    base_temperature: float = 0.07      # T_base; the loss is scaled by T / T_base
    warmup_iters: int = 5000            # the term is 0 up to this iteration (memory still filled)
    proj_dim: int = 256                 # embedding dimension D of the projection head
    proj_kind: Literal["convmlp", "linear"] = "convmlp"
    max_samples: int = 1024             # anchors per batch (at most)
    max_views: int = 100                # anchors per (image, class); pairs need more pixels than this
    memory: bool = False                # pixel + region memories as the contrast set
    memory_size: int = 5000             # pixel memory slots per class (M)
    region_memory_size: int = 5000      # region memory slots per class
    pixels_per_class: int = 10          # pixels pushed per class per image (V)
    sampling: Literal["all", "random", "hardest", "semi_hard"] = "all"
    hard_k: int = 512                   # positives and negatives kept per anchor (sampling != all)
    semi_hard_frac: float = 0.1         # semi_hard: draw from the hardest fraction
    synth_neg_neg: int = 0              # negative-negative mixes per anchor (0 = off)
    synth_neg_anchor: int = 0           # negative-anchor mixes per anchor (0 = off)
    alpha_max: float = 0.5              # anchor weight of a negative-anchor mix is in [0, alpha_max)

    def check(self) -> list[Issue]:
        return [*bound("weight", self.weight, ge=0), *bound("temperature", self.temperature, gt=0),
                *bound("base_temperature", self.base_temperature, gt=0),
                *bound("warmup_iters", self.warmup_iters, ge=0), *bound("proj_dim", self.proj_dim, ge=1),
                *bound("max_samples", self.max_samples, ge=1), *bound("max_views", self.max_views, ge=1),
                *bound("memory_size", self.memory_size, ge=1),
                *bound("region_memory_size", self.region_memory_size, ge=1),
                *bound("pixels_per_class", self.pixels_per_class, ge=1), *bound("hard_k", self.hard_k, ge=1),
                *bound("semi_hard_frac", self.semi_hard_frac, gt=0, le=1),
                *bound("synth_neg_neg", self.synth_neg_neg, ge=0),
                *bound("synth_neg_anchor", self.synth_neg_anchor, ge=0),
                *bound("alpha_max", self.alpha_max, gt=0, le=0.5)]


@dataclass
class HiPoSegLossConfig:
    """HiPoSeg hierarchical prototypes (``method.name: hiposeg``; docs/methods/hiposeg.md).

    The taxonomy is ``data.taxonomy`` (every level from ``data.level`` up). Stage starts are
    fractions of ``train.iters``; a weight of 0 switches its terms off (the ablation)."""

    proj_dim: int = 256                 # embedding dimension D of the projection head
    proj_kind: Literal["convmlp", "linear"] = "convmlp"
    momentum: float = 0.9               # m: prototype buffers and online prototypes
    tau: float = 0.1                    # pixel -> prototype temperature (L_fh, L_fl)
    kappa: float = 0.1                  # prototype -> prototype temperature (L_hh, L_ll)
    sigma1: float = 0.25                # alignment: a child stays within sigma1 of its parent
    sigma2: float = 1.0                 # alignment: coarse prototypes at least sigma2 apart
    weight_coarse: float = 1.0          # w_h: L_fh + L_hh at every level above the finest
    weight_fine: float = 1.0            # w_l: L_fl + L_ll at the finest level
    weight_align: float = 1.0           # w_a: L_align over each pair of adjacent levels
    coarse_start: float = 0.075         # coarse terms from this fraction of train.iters
    fine_start: float = 0.225           # fine terms from here
    align_start: float = 0.375          # alignment from here
    update_from: Literal["correct", "all"] = "correct"  # pixels that update the prototype buffers

    def check(self) -> list[Issue]:
        issues = [*bound("proj_dim", self.proj_dim, ge=1), *bound("momentum", self.momentum, ge=0, le=1),
                  *bound("tau", self.tau, gt=0), *bound("kappa", self.kappa, gt=0),
                  *bound("sigma1", self.sigma1, ge=0), *bound("sigma2", self.sigma2, ge=0),
                  *bound("weight_coarse", self.weight_coarse, ge=0), *bound("weight_fine", self.weight_fine, ge=0),
                  *bound("weight_align", self.weight_align, ge=0)]
        for key in ("coarse_start", "fine_start", "align_start"):
            issues += bound(key, getattr(self, key), ge=0, le=1)
        return issues


@dataclass
class PRCLLossConfig:
    """PRCL probabilistic contrast (``method.name: prcl``; docs/methods/prcl.md)."""

    weight: float = 1.0                 # contrast weight, times exp(-5 (t / T)^2) when ramp is on
    ramp: bool = True                   # the public code's ramp-down of the contrast weight
    proj_dim: int = 256                 # D of the mean and variance heads
    temperature: float = 100.0          # T of the MLS softmaxes (every released config of the paper)
    num_anchors: int = 256              # anchors per class (drawn with replacement)
    num_negatives: int = 512            # pixel negatives per anchor
    anchor_threshold: float = 0.8       # anchors: pixels whose predicted probability of their label is below this
    num_virtual: int = 1                # virtual negatives per other class with a GDP
    virtual_radius: float = 1.0         # r of mu_g + r * eps * sqrt(var_g)
    negative_protos: Literal["global", "batch"] = "global"  # prototypes of the negative-class distribution
    gdp_decay: Optional[float] = None   # None: plain precision addition (paper); < 1 keeps var_g from collapsing
    var_min: float = 1.0e-4             # floor of the sigmoid variance head (1 / var stays finite)

    def check(self) -> list[Issue]:
        return [*bound("weight", self.weight, ge=0), *bound("proj_dim", self.proj_dim, ge=1),
                *bound("temperature", self.temperature, gt=0), *bound("num_anchors", self.num_anchors, ge=1),
                *bound("num_negatives", self.num_negatives, ge=1),
                *bound("anchor_threshold", self.anchor_threshold, ge=0, le=1),
                *bound("num_virtual", self.num_virtual, ge=0), *bound("virtual_radius", self.virtual_radius, ge=0),
                *bound("gdp_decay", self.gdp_decay, gt=0, le=1), *bound("var_min", self.var_min, gt=0, lt=1)]


@dataclass
class LossConfig:
    """Loss terms; each method adds its own sub-section."""

    ce: CELossConfig = field(default_factory=CELossConfig)
    contrast: ContrastLossConfig = field(default_factory=ContrastLossConfig)
    hiposeg: HiPoSegLossConfig = field(default_factory=HiPoSegLossConfig)
    prcl: PRCLLossConfig = field(default_factory=PRCLLossConfig)


@dataclass
class SemiConfig:
    """The semi-supervised framework (``method.name: mean_teacher | prcl``; docs/methods/prcl.md)."""

    ema_decay: float = 0.99             # teacher decay: min(1 - 1 / (step + 1), ema_decay)
    weak_threshold: float = 0.7         # unlabelled pixels this confident take part in the contrast
    strong_threshold: float = 0.97      # each unlabelled image's CE weighted by its share of pixels this confident
    unsup_weight: float = 1.0           # weight of the pseudo-label CE
    class_mix: bool = True              # ClassMix in the strong view
    jitter: float = 0.25                # colour jitter strength (factors in [1 - j, 1 + j], hue +-j/2)
    jitter_p: float = 0.8               # probability of colour jitter per image
    blur_p: float = 0.5                 # probability of Gaussian blur per image
    eval_teacher: bool = True           # evaluate and export the EMA teacher (as the public code) or the student

    def check(self) -> list[Issue]:
        return [*bound("ema_decay", self.ema_decay, ge=0, le=1),
                *bound("weak_threshold", self.weak_threshold, ge=0, le=1),
                *bound("strong_threshold", self.strong_threshold, ge=0, le=1),
                *bound("unsup_weight", self.unsup_weight, ge=0), *bound("jitter", self.jitter, ge=0, lt=1),
                *bound("jitter_p", self.jitter_p, ge=0, le=1), *bound("blur_p", self.blur_p, ge=0, le=1)]


@dataclass
class FewShotConfig:
    """Few-shot segmentation (``method.name: hdmnet``, and the base-class stage one with
    ``base_training``; docs/methods/hdmnet.md)."""

    fold: int = 0                       # held-out fold: its classes are novel (test), the rest base (train)
    shots: int = 1                      # K support images per episode
    folds: Optional[str] = None         # folds file; None: <data.root>/folds.yaml; builtin:pascal5i | builtin:coco20i
    base_training: bool = False         # stage one: plain segmentation of the base classes (novel -> ignore)
    min_fg_pixels: int = 2048           # an image serves class c only if c covers this many pixels (PFENet: 2*32*32)
    val_episodes: int = 1000            # seeded evaluation episodes per seed
    eval_seeds: list[int] = field(default_factory=lambda: [0])  # python -m segproto.test averages over these
    backbone_checkpoint: Optional[str] = None  # stage-one checkpoint: its backbone is loaded and frozen
    distill_weight: float = 1.0         # weight of the correlation distillation (0 = CE only)
    temperature: float = 0.1            # matching scores cos / temperature
    prior_scale: float = 10.0           # prior masks are multiplied by this
    dim: int = 64                       # channels of the transformer hierarchy
    match_tile: int = 1024              # query positions per matching tile (bounds peak memory)
    feature_cache_mb: float = 1024.0    # evaluation memo of the frozen backbone's per-image features (0 = off)

    def check(self) -> list[Issue]:
        return [*bound("fold", self.fold, ge=0), *bound("shots", self.shots, ge=1),
                *bound("min_fg_pixels", self.min_fg_pixels, ge=1), *bound("val_episodes", self.val_episodes, ge=1),
                *bound("distill_weight", self.distill_weight, ge=0), *bound("temperature", self.temperature, gt=0),
                *bound("prior_scale", self.prior_scale, gt=0), *bound("dim", self.dim, ge=8),
                *bound("match_tile", self.match_tile, ge=1),
                *bound("feature_cache_mb", self.feature_cache_mb, ge=0), *nonempty("folds", self.folds),
                *([("eval_seeds", "must not be empty")] if not self.eval_seeds else [])]


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
class Config:
    """Root of the config tree (what :func:`segproto.config.load_config` returns)."""

    seed: int = 0
    deterministic: bool = True
    work_dir: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> list[Issue]:
        """Checks that span sections (per-section checks live in each section)."""
        issues = [*bound("seed", self.seed, ge=0, lt=2**32), *nonempty("work_dir", self.work_dir),
                  *_same_length("loss.ce.class_weight", self.loss.ce.class_weight,
                                "data.classes", self.data.classes)]
        if self.sched.warmup_iters > self.train.iters:
            issues.append(("sched.warmup_iters", f"({self.sched.warmup_iters}) must be <= "
                                                 f"'train.iters' ({self.train.iters})"))
        if self.sched.min_lr > self.optim.lr:
            issues.append(("sched.min_lr", f"({self.sched.min_lr}) must be <= "
                                           f"'optim.lr' ({self.optim.lr})"))
        return issues
