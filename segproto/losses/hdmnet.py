"""HDMNet correlation distillation (``../shared/design/methods.md`` section 4, docs/methods/hdmnet.md).

The matching stages of :class:`segproto.models.hdmnet.HDMNet` give one correlation map ``w`` per
stage, coarse to fine. Each stage is taught by the one before it (the first by the query ground
truth)::

    teacher_0 = 1 on foreground, -1e9 elsewhere                 # query mask as logits
    t_s       = bilinear(teacher, size of w_s), align_corners=False, when sizes differ
    L_s       = mean_b sum_hw softmax(t_s) * (log softmax(t_s) - log softmax(w_s))
    teacher   = w_s.detach()
    L_distill = mean_s L_s

Softmaxes are over the flattened spatial positions of one image. Loss only: nothing of it runs
at inference.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["correlation_distillation_loss", "ground_truth_teacher"]

_NEG = -1e9  # background logit of the ground-truth teacher


def ground_truth_teacher(query_mask: Tensor, size: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """``teacher_0`` (1 on foreground, -1e9 elsewhere) bilinearly resized to ``size``.

    Bilinear interpolation is affine-invariant (its weights sum to one), so the resize of
    ``-1e9 + (1 + 1e9) * fg`` is computed as ``-1e9 + (1 + 1e9) * bilinear(fg)``: the same value
    mathematically, but a constant background stays exactly -1e9 instead of picking up rounding
    errors of ~1e9 * ulp (in float32 tens of units, enough to make the "uniform" teacher of an
    all-background mask peaked).

    Args:
        query_mask: ``[B, H, W]``; 1 = foreground, any other value (0, 255) background.
        size: ``(h, w)`` of the stage map.
        dtype: Float dtype of the result.

    Returns:
        ``[B, h, w]`` teacher logits.
    """
    fg = (query_mask == 1).to(dtype)  # [B, H, W]
    if tuple(fg.shape[-2:]) != tuple(size):
        fg = F.interpolate(fg[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return _NEG + (1.0 - _NEG) * fg


def _check(maps: Sequence[Tensor], query_mask: Tensor) -> None:
    if query_mask.dim() != 3:
        raise ValueError(f"query_mask must be [B, H, W], got shape {tuple(query_mask.shape)}")
    if len(maps) == 0:
        raise ValueError("maps must be a non-empty coarse-to-fine list of [B, h, w] correlation maps")
    for i, w in enumerate(maps):
        if w.dim() != 3 or w.shape[0] != query_mask.shape[0] or not w.is_floating_point():
            raise ValueError(f"maps[{i}] must be a float [B, h, w] with B = {query_mask.shape[0]} "
                             f"(query_mask's batch), got {w.dtype} {tuple(w.shape)}")


def correlation_distillation_loss(maps: Sequence[Tensor], query_mask: Tensor) -> Tensor:
    """``L_distill``: each stage's correlation map distilled from the previous (coarser) one.

    Args:
        maps: Coarse-to-fine list of ``[B, h_s, w_s]`` correlation maps (any float dtype; the
            loss is computed in at least float32).
        query_mask: ``[B, H, W]`` query labels; 1 = foreground, every other value (0 and 255)
            background (255 is *not* ignored here, as in methods.md).

    Returns:
        Scalar loss (mean over stages of the batch-mean KL). Gradient flows into every
        ``maps[s]`` as a student only; as a teacher it is detached.
    """
    _check(maps, query_mask)
    teacher = None  # None: the ground truth
    total = maps[0].new_zeros((), dtype=torch.promote_types(maps[0].dtype, torch.float32))
    for w in maps:
        w = w.to(total.dtype)  # [B, h, w]
        size = tuple(w.shape[-2:])
        if teacher is None:
            t = ground_truth_teacher(query_mask, size, w.dtype)
        elif tuple(teacher.shape[-2:]) != size:
            t = F.interpolate(teacher[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        else:
            t = teacher
        log_t = F.log_softmax(t.flatten(1), dim=1)  # [B, h*w]
        log_s = F.log_softmax(w.flatten(1), dim=1)  # [B, h*w]
        total = total + (log_t.exp() * (log_t - log_s)).sum(1).mean()
        teacher = w.detach()
    return total / len(maps)
