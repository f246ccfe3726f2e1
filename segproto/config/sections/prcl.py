"""PRCL probabilistic representation contrast (``loss.prcl``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from ..checks import Issue, bound
from . import section

__all__ = ["PRCLLossConfig"]


@section("loss.prcl", rank=30)
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
