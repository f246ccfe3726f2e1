"""PiCo's segmentation-aware hard anchor sampling (:func:`sample_hard_anchors`), vectorised over
(image, class) pairs."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from segproto import ops
from segproto.labels import check_labels

__all__ = ["AnchorSample", "sample_hard_anchors"]


class AnchorSample(NamedTuple):
    """Anchors drawn by :func:`sample_hard_anchors`, sorted by (image, class), easy before hard."""

    feats: Tensor  # [S, D]
    labels: Tensor  # [S] int64
    image: Tensor  # [S] int64
    pixel: Tensor  # [S] int64 (flat index in the embedding map)
    hard: Tensor  # [S] bool: labelled c but predicted otherwise
    hard_frac: Tensor  # scalar float: hard.mean() (0 when S = 0)


def sample_hard_anchors(emb: Tensor, labels: Tensor, preds: Tensor, num_classes: int, max_samples: int,
                        max_views: int, ignore_index: int = 255, generator: Optional[torch.Generator] = None,
                        fixed_shape: Optional[bool] = None) -> AnchorSample:
    """Segmentation-aware hard anchor sampling, vectorised (no loop over images or classes).

    Every (image b, class c) with more than ``max_views`` labelled pixels takes part; with A such
    pairs, each gives ``n_view = min(max_samples // A, max_views)`` distinct pixels: half hard
    (labelled c, predicted otherwise) and half easy (labelled and predicted c), the kind that runs
    short filled up from the other. Uniform within each kind, fully determined by ``generator``.

    Args:
        emb: [B, N, D] embeddings (N = h * w). labels, preds: [B, N] int64 at the same resolution.
        num_classes: K. max_samples, max_views: as above. ignore_index: unlabelled pixels.
        generator: on ``emb.device``.
        fixed_shape: return exactly ``max_samples`` rows: the ``A * n_view`` anchors first, then
            padding rows labelled ``ignore_index`` (every PiCo loss leaves those out), so no shape
            depends on the labels and the only host sync is the label check. Default: True on
            every device but the CPU (where a sync costs nothing and padding would cost loss compute).

    Returns:
        :class:`AnchorSample` sorted by (image, class), easy before hard (padding last);
        ``hard_frac`` is over the drawn anchors.
    """
    b, n, _ = emb.shape
    dev, k = emb.device, num_classes
    fixed = dev.type != "cpu" if fixed_shape is None else fixed_shape
    flat = labels.reshape(-1)
    valid = flat != ignore_index
    check_labels(flat, k, ignore_index, "sample_hard_anchors")
    # random order within a group = ascending (key, pixel); on the CPU the valid pixels take
    # consecutive draws in flat order, elsewhere every pixel takes one draw (no host sync)
    keys = ops.uniform_pixel_keys(labels, ignore_index, generator).reshape(-1)
    pair = torch.where(valid, torch.arange(b * n, device=dev) // n * k + flat, b * k)  # b * k: ignored
    hard = valid & (preds.reshape(-1) != flat)
    group = 2 * pair + hard.long()  # 2 * b * k: ignored pixels
    order = torch.sort(keys, stable=True)[1]
    g, by_group = torch.sort(group[order], stable=True)
    order = order[by_group]  # by group, random within a group
    # group sizes by a search in the sorted groups (bincount would read the device twice on a GPU)
    first = torch.searchsorted(g, torch.arange(2 * b * k + 2, device=dev))  # [2 * B * K + 2]
    size = first[1:] - first[:-1]  # [2 * B * K + 1]
    n_hard = size[1:2 * b * k:2]
    n_pair = size[0:2 * b * k:2] + n_hard
    eligible = n_pair > max_views
    n_eligible = eligible.sum()
    n_view = torch.where(n_eligible > 0, (max_samples // n_eligible.clamp(min=1)).clamp(max=max_views), 0)
    keep_hard = torch.minimum(n_hard, torch.clamp(n_view - (n_pair - n_hard), min=n_view // 2))
    keep_hard = torch.where(eligible, keep_hard, 0)
    keep_easy = torch.where(eligible, n_view - keep_hard, 0)
    quota = torch.stack([keep_easy, keep_hard], 1).reshape(-1)  # [2 * B * K], group = 2 * pair + hard
    quota = torch.cat([quota, quota.new_zeros(1)])  # the ignored pixels' group takes nothing
    rank = torch.arange(b * n, device=dev) - first[g]
    drawn = rank < quota[g]
    if fixed:
        # eligible pair j (in (image, class) order) owns slots [j * n_view, (j + 1) * n_view), easy first
        p = torch.div(g, 2, rounding_mode="floor").clamp(max=b * k - 1)
        start = (torch.cumsum(eligible.long(), 0) - 1) * n_view
        slot = start[p] + (g % 2) * keep_easy[p] + rank
        out = torch.full((max_samples + 1,), -1, dtype=torch.long, device=dev)
        out.scatter_(0, torch.where(drawn, slot, max_samples), order)  # slot max_samples: the rest
        idx = out[:-1]
        filled = idx >= 0
        idx = idx.clamp(min=0)
        lab = torch.where(filled, flat[idx], ignore_index)
        is_hard = hard[idx] & filled
        frac = is_hard.sum() / filled.sum().clamp(min=1)
    else:
        idx = order[drawn]
        lab, is_hard = flat[idx], hard[idx]
        frac = is_hard.float().mean() if is_hard.numel() else emb.new_zeros((), dtype=torch.float32)
    image, pixel = torch.div(idx, n, rounding_mode="floor"), idx % n
    return AnchorSample(emb[image, pixel], lab, image, pixel, is_hard, frac.float())

