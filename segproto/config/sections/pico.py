"""PiCo pixel contrast (``loss.contrast``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..checks import Issue, bound
from . import section

__all__ = ["ContrastLossConfig"]


@section("loss.contrast", rank=10)
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
