"""The untrained floor of few-shot segmentation: HDMNet's prior mask, thresholded.

The prior is what a frozen backbone alone says about an episode: for every query position the
highest cosine similarity to a support foreground feature, min-max normalised per image (PFENet),
on layer4 and on layer3, averaged over shots (:meth:`segproto.models.hdmnet.HDMNet._priors`).
:class:`PriorBaseline` predicts foreground where the mean of the two levels exceeds a threshold,
with no trained parameter at all, so a trained few-shot model that does not beat it has learned
nothing beyond its backbone.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hdmnet import HDMNet

__all__ = ["PriorBaseline"]


class PriorBaseline(nn.Module):
    """Thresholded prior of an :class:`HDMNet`'s frozen backbone, as two-class logits.

    Args:
        model: The HDMNet whose frozen backbone (and feature cache) gives the priors; its trained
            parts are not used.
        threshold: Foreground where the mean normalised prior exceeds this (in [0, 1]).
    """

    def __init__(self, model: HDMNet, threshold: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        self.model = model
        self.threshold = threshold

    def feature_cache(self) -> contextlib.AbstractContextManager:
        """The wrapped model's evaluation feature cache (the method protocol's evaluation hook)."""
        return self.model.cached_backbone()

    @torch.no_grad()
    def forward(self, img: Tensor, support_img: Tensor, support_mask: Tensor) -> Tensor:
        """Args as :meth:`HDMNet.forward`. Returns logits ``[B, 2, H, W]``: channel 1 minus channel 0
        is the mean normalised prior minus the threshold, so argmax is the thresholded prior."""
        model = self.model
        model._check_inputs(img, support_img, support_mask)
        b, k = support_img.shape[:2]
        fg = (support_mask == 1).to(support_img.dtype).flatten(0, 1)[:, None]  # [B*K, 1, H, W]
        qf = model._frozen(img)
        sf = model._frozen(support_img.flatten(0, 1) * fg)
        prior = model._priors(qf, sf, fg, k).mean(1, keepdim=True) / model.prior_scale  # [B, 1, h, w]
        prior = F.interpolate(prior, size=img.shape[-2:], mode="bilinear", align_corners=False)
        score = prior - self.threshold
        return torch.cat([-score, score], 1)
