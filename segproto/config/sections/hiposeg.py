"""HiPoSeg hierarchical prototypes (``loss.hiposeg``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..checks import Issue, bound
from . import section

__all__ = ["HiPoSegLossConfig"]


@section("loss.hiposeg", rank=20)
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
