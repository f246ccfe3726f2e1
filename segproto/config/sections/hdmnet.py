"""Few-shot segmentation: HDMNet and its base-class stage one (``fewshot``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..checks import Issue, bound, nonempty
from . import section

__all__ = ["FewShotConfig"]


@section("fewshot", rank=20)
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
    # Novel-class pixels in meta-training (stage two): "exclude" drops every training image holding
    # one (the public BAM/HDMNet lists); "ignore" sets them to data.ignore_index in the episode masks;
    # "background" leaves them background (0), so training teaches that novel classes are background.
    novel_pixels: Literal["exclude", "ignore", "background"] = "exclude"
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
