"""The config sections of the methods: ``loss.contrast`` (PiCo), ``loss.hiposeg``, ``loss.prcl``,
``semi`` (mean teacher, PRCL) and ``fewshot`` (HDMNet and its stage one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from .checks import Issue, bound, nonempty

__all__ = ["ContrastLossConfig", "HiPoSegLossConfig", "PRCLLossConfig", "SemiConfig", "FewShotConfig"]


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
