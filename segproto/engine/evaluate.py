"""Dataset-level evaluation: one confusion matrix over the whole split (summed over ranks),
mIoU at the training level and at every coarser level of the taxonomy."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from segproto.evaluation import SegEvaluator, hierarchical_metrics


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, class_names: list[str],
             device: torch.device, ignore_index: int = 255, taxonomy=None, level: int = 0,
             amp_dtype: Optional[torch.dtype] = None, target_fn=None, test_mode=None, on_batch=None,
             keep_confusion: bool = False) -> dict[str, Any]:
    """Runs ``model`` (eval mode: logits at input size) over ``loader``.

    Args:
        test_mode: A :class:`segproto.tta.TestMode` (sliding window, flip, multi-scale); None: one
            whole-image forward.
        on_batch: Called as ``on_batch(batch, pred, gt)`` after each batch (``pred`` and ``gt``
            ``[B, H, W]`` at the training level), e.g. to draw pictures.
        keep_confusion: Also return the ``[K, K]`` confusion matrix (``confusion``, nested lists;
            rows = ground truth, columns = prediction).

    Returns:
        ``metrics_from_confusion`` of the training level (``aAcc``, ``mIoU``, ``mAcc``, ``IoU``,
        ``Acc``, ``classes``) plus ``levels``: {level name: metrics} for the training level and
        every coarser taxonomy level (predictions mapped upward through the taxonomy).
    """
    from segproto.tta import predict

    was_training = model.training
    model.eval()
    ev = SegEvaluator(num_classes, ignore_index=ignore_index, device=device)
    for batch in loader:
        img = batch["img"].to(device, non_blocking=True)
        gt = batch["gt"].to(device, non_blocking=True)
        if target_fn is not None:
            gt = target_fn(gt)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(img) if test_mode is None else predict(model, img, test_mode)[0]
        pred = logits.float().argmax(1)
        ev.update(pred, gt)
        if on_batch is not None:
            on_batch(batch, pred, gt)
    ev.all_reduce()
    metrics = ev.compute(class_names)
    if keep_confusion:
        metrics["confusion"] = ev.confusion.cpu().tolist()
    if taxonomy is not None:
        names = taxonomy.level_names
        maps = {names[lv]: taxonomy.parent_map(level, lv) for lv in range(level, taxonomy.num_levels)}
        metrics["levels"] = {
            k: {key: v[key] for key in ("aAcc", "mIoU", "mAcc")}
            for k, v in hierarchical_metrics(ev.confusion.cpu().numpy(), maps).items()
        }
    model.train(was_training)
    return metrics
