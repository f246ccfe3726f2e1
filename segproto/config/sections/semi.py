"""The semi-supervised framework of mean teacher and PRCL (``semi``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import Issue, bound
from . import section

__all__ = ["SemiConfig"]


@section("semi", rank=10)
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
