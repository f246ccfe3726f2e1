"""Semantic segmentation metrics from a dataset-level confusion matrix.

Conventions (the same as mmsegmentation's ``IoUMetric``):

* ``cm[i, j]`` counts pixels with ground truth ``i`` predicted as ``j`` (rows = GT).
* ``IoU_k = TP / (TP + FP + FN)``; NaN only when the union is empty, i.e. class ``k`` appears
  neither in the ground truth nor in the prediction. A class that is predicted but never in
  the ground truth has IoU 0 (it counts against ``mIoU``).
* ``Acc_k = TP / (TP + FN)`` (per-class recall); NaN when class ``k`` is absent from the
  ground truth (whether or not it was predicted).
* ``mIoU`` / ``mAcc`` are ``nanmean`` over classes, ``aAcc = trace / total``; all in percent.
  A mean over no finite value is NaN (no warning).

Coarser taxonomy levels are scored by mapping the fine confusion matrix upward
(:func:`map_confusion`): ``cm_coarse = A^T cm A`` with the fine->coarse one-hot matrix ``A``,
which equals relabelling both GT and prediction with the parent map and recounting.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist

from segproto.labels import first_bad_label

ArrayLike = Union[torch.Tensor, np.ndarray]


def _as_long(x: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"expected an integer label tensor, got dtype {t.dtype}")
    return t.long()


def _first_bad(values: torch.Tensor, num_classes: int) -> Optional[int]:
    return first_bad_label(values, num_classes)


def confusion_matrix(pred: ArrayLike, target: ArrayLike, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """Count (ground truth, prediction) pairs over all pixels, with one ``bincount``.

    Args:
        pred: Predicted labels, any shape ``[...]``, integer dtype, values in ``[0, K)``
            everywhere (including at ignored pixels).
        target: Ground-truth labels, same shape; ``ignore_index`` pixels are skipped, every
            other value must lie in ``[0, K)``.
        num_classes: ``K``.
        ignore_index: Label value of pixels to skip.

    Returns:
        ``[K, K]`` int64 tensor on ``pred``'s device; rows = ground truth, columns = prediction.

    Raises:
        ValueError: shape mismatch, or a label outside ``[0, K)`` (the value is named).
    """
    pred = _as_long(pred)
    target = _as_long(target).to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    bad = _first_bad(pred, num_classes)
    if bad is not None:
        raise ValueError(f"prediction value {bad} outside [0, {num_classes})")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    bad = _first_bad(target, num_classes)
    if bad is not None:
        raise ValueError(f"target value {bad} outside [0, {num_classes}) and not "
                         f"ignore_index={ignore_index}")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    finite = x[~np.isnan(x)]
    return float(finite.mean()) if finite.size else math.nan


def metrics_from_confusion(cm: ArrayLike, class_names: Optional[Sequence[str]] = None
                           ) -> dict[str, Any]:
    """Pixel accuracy, IoU and per-class accuracy from a confusion matrix (see module doc).

    Args:
        cm: ``[K, K]`` confusion matrix, rows = ground truth.
        class_names: ``K`` names; default ``"0" .. "K-1"``.

    Returns:
        ``{"aAcc", "mIoU", "mAcc"}`` as Python floats in percent, ``"IoU"`` and ``"Acc"`` as
        lists of ``K`` floats in percent (NaN where undefined), and ``"classes"`` (names).
        All values are JSON-serialisable (NaN aside, which ``json`` writes as ``NaN``).
    """
    cm = torch.as_tensor(cm).detach().cpu().double().numpy()
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be [K, K], got shape {cm.shape}")
    k = cm.shape[0]
    names = [str(i) for i in range(k)] if class_names is None else list(class_names)
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    tp, gt, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    iou = _ratio(tp, gt + predicted - tp) * 100
    acc = _ratio(tp, gt) * 100
    total = cm.sum()
    return {
        "aAcc": float(tp.sum() / total * 100) if total > 0 else math.nan,
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "IoU": [float(v) for v in iou],
        "Acc": [float(v) for v in acc],
        "classes": names,
    }


def map_confusion(cm: ArrayLike, parent_map: ArrayLike,
                  num_coarse: Optional[int] = None) -> torch.Tensor:
    """Confusion matrix at a coarser level: ``A^T cm A`` with ``A[f, parent_map[f]] = 1``.

    Implemented as two exact integer ``index_add`` passes (rows, then columns), so it runs on
    any device and never goes through floating point.

    Args:
        cm: ``[K, K]`` fine-level confusion matrix (rows = ground truth).
        parent_map: ``[K]`` ints, ``parent_map[f]`` = coarse class of fine class ``f``.
        num_coarse: Number of coarse classes ``C`` (default ``max(parent_map) + 1``).

    Returns:
        ``[C, C]`` confusion matrix, same dtype and device as ``cm``.
    """
    cm = torch.as_tensor(cm)
    pm = torch.as_tensor(parent_map).long().to(cm.device)
    if pm.ndim != 1 or pm.numel() != cm.shape[0]:
        raise ValueError(f"parent_map has shape {tuple(pm.shape)}, expected ({cm.shape[0]},)")
    c = int(pm.max()) + 1 if num_coarse is None else num_coarse
    if bool((pm < 0).any()) or bool((pm >= c).any()):
        raise ValueError(f"parent_map values must lie in [0, {c})")
    rows = torch.zeros(c, cm.shape[1], dtype=cm.dtype, device=cm.device).index_add_(0, pm, cm)
    return torch.zeros(c, c, dtype=cm.dtype, device=cm.device).index_add_(1, pm, rows)


def hierarchical_metrics(cm: ArrayLike, parent_maps: Mapping[str, ArrayLike],
                         class_names: Optional[Mapping[str, Sequence[str]]] = None
                         ) -> dict[str, dict[str, Any]]:
    """Metrics at every taxonomy level, predictions and GT mapped upward from ``cm``'s level.

    Args:
        cm: ``[K, K]`` confusion matrix at the training level.
        parent_maps: ``{level name: [K] map from cm's classes to that level's classes}``;
            include an identity map to get the training level itself.
        class_names: Optional ``{level name: names}``.

    Returns:
        ``{level name: metrics_from_confusion(...)}``.
    """
    names = class_names or {}
    out = {}
    for level, parent_map in parent_maps.items():
        level_names = names.get(level)
        coarse = map_confusion(cm, parent_map,
                               None if level_names is None else len(level_names))
        out[level] = metrics_from_confusion(coarse, level_names)
    return out


class SegEvaluator:
    """Accumulates a dataset-level confusion matrix over batches (and processes).

    Example::

        ev = SegEvaluator(num_classes=19)
        for images, labels in loader:
            ev.update(model(images), labels)   # logits [B, K, H, W] or labels [B, H, W]
        ev.all_reduce()                         # no-op unless torch.distributed is initialised
        print(format_table(ev.compute(names)))
    """

    def __init__(self, num_classes: int, ignore_index: int = 255,
                 device: Union[str, torch.device] = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.device = torch.device(device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64,
                                     device=self.device)

    def reset(self) -> None:
        """Zero the accumulated counts."""
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, logits_or_pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch.

        Args:
            logits_or_pred: ``[B, K, H, W]`` scores (argmax over dim 1 is taken) or
                ``[B, H, W]`` integer predictions.
            target: ``[B, H, W]`` ground truth with ``ignore_index`` for unlabelled pixels.
        """
        pred = logits_or_pred
        if pred.ndim == target.ndim + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"logits have {pred.shape[1]} channels, expected "
                                 f"{self.num_classes}")
            pred = pred.argmax(dim=1)
        cm = confusion_matrix(pred, target.to(pred.device), self.num_classes, self.ignore_index)
        self.confusion += cm.to(self.device)

    def all_reduce(self) -> None:
        """Sum the counts over all ranks (call once per evaluation, on every rank).

        With NCCL the evaluator's ``device`` must be the rank's CUDA device.
        """
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.confusion, op=dist.ReduceOp.SUM)

    def compute(self, class_names: Optional[Sequence[str]] = None) -> dict[str, Any]:
        """Metrics of everything accumulated so far (see :func:`metrics_from_confusion`)."""
        return metrics_from_confusion(self.confusion, class_names)


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.2f}"


def format_table(metrics: Mapping[str, Any], class_names: Optional[Sequence[str]] = None) -> str:
    """Plain-text per-class table plus a summary line, for logs.

    Args:
        metrics: Output of :func:`metrics_from_confusion`.
        class_names: Row names; default ``metrics["classes"]``.

    Returns:
        Something like::

            Class      IoU    Acc
            road     97.10  98.50
            ...
            aAcc: 95.12  mIoU: 71.30  mAcc: 80.02
    """
    names = list(class_names if class_names is not None else
                 metrics.get("classes", range(len(metrics["IoU"]))))
    names = [str(n) for n in names]
    if len(names) != len(metrics["IoU"]):
        raise ValueError(f"{len(names)} class names for {len(metrics['IoU'])} classes")
    width = max([len("Class"), *map(len, names)])
    lines = [f"{'Class':<{width}}  {'IoU':>6}  {'Acc':>6}"]
    lines += [f"{n:<{width}}  {_fmt(i):>6}  {_fmt(a):>6}"
              for n, i, a in zip(names, metrics["IoU"], metrics["Acc"])]
    lines.append("  ".join(f"{k}: {_fmt(metrics[k])}" for k in ("aAcc", "mIoU", "mAcc")))
    return "\n".join(lines)


class FewShotEvaluator:
    """Few-shot segmentation metrics, the PFENet/HDMNet protocol.

    Per episode, with ignore pixels (``gt == ignore_index``) excluded from both prediction and
    ground truth: the foreground (label 1) intersection and union are added to the episode's
    class; foreground and background (label 0) intersection and union are also added to two
    totals over all episodes.

    * ``mIoU`` = mean over the fold's classes of ``I_c / U_c`` (accumulated per class), x100.
      Classes that occurred in no episode (or only with an empty union) have NaN IoU and are
      excluded from the mean; NaN when no class qualifies.
    * ``FB-IoU`` = mean of the foreground and background IoU of the totals, x100 (an empty
      union, e.g. no background anywhere, drops that term; NaN before any episode).

    Example::

        ev = FewShotEvaluator(novel_classes)
        for batch in loader:
            ev.update(model(batch).argmax(1), batch["gt"], batch["cls"])
        ev.all_reduce()
        print(ev.compute()["mIoU"])
    """

    def __init__(self, class_ids: Sequence[int], ignore_index: int = 255,
                 device: Union[str, torch.device] = "cpu"):
        self.class_ids = [int(c) for c in class_ids]
        if not self.class_ids or len(set(self.class_ids)) != len(self.class_ids):
            raise ValueError(f"class_ids must be non-empty and distinct, got {self.class_ids}")
        self._pos = {c: i for i, c in enumerate(self.class_ids)}
        self.ignore_index = ignore_index
        self.device = torch.device(device)
        # rows: class fg intersection, class fg union, class episodes; then [fg I, bg I, fg U,
        # bg U, episodes] in the last row's first five slots (one tensor -> one all_reduce)
        self.counts = torch.zeros(4, max(len(self.class_ids), 5), dtype=torch.int64,
                                  device=self.device)

    def reset(self) -> None:
        """Zero the accumulated counts."""
        self.counts.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor, cls: ArrayLike) -> None:
        """Add a batch of episodes.

        Args:
            pred: ``[B, H, W]`` predictions in {0, 1}, or ``[B, 2, H, W]`` scores (argmax).
            gt: ``[B, H, W]`` query masks in {0, 1, ignore_index}.
            cls: ``[B]`` class id of each episode (one of ``class_ids``).
        """
        if pred.ndim == gt.ndim + 1:
            pred = pred.argmax(dim=1)
        pred, gt = _as_long(pred), _as_long(gt).to(pred.device)
        cls = _as_long(cls).reshape(-1).tolist()
        if pred.shape != gt.shape or pred.ndim != 3 or len(cls) != pred.shape[0]:
            raise ValueError(f"expected pred and gt [B, H, W] and cls [B]; got "
                             f"{tuple(pred.shape)}, {tuple(gt.shape)}, {len(cls)} classes")
        if bool(((pred != 0) & (pred != 1)).any()):
            raise ValueError(f"prediction values must be 0 or 1, got {pred.unique().tolist()}")
        valid = gt != self.ignore_index
        if bool((valid & (gt != 0) & (gt != 1)).any()):
            raise ValueError(f"ground-truth values must be 0, 1 or ignore_index="
                             f"{self.ignore_index}, got {gt.unique().tolist()}")
        unknown = [c for c in cls if c not in self._pos]
        if unknown:
            raise ValueError(f"episode classes {sorted(set(unknown))} are not among class_ids "
                             f"{self.class_ids}")
        p1, g1 = (pred == 1) & valid, (gt == 1) & valid
        p0, g0 = (pred == 0) & valid, (gt == 0) & valid
        fg_i, fg_u = (p1 & g1).sum((1, 2)), (p1 | g1).sum((1, 2))
        bg_i, bg_u = (p0 & g0).sum((1, 2)), (p0 | g0).sum((1, 2))
        idx = torch.tensor([self._pos[c] for c in cls], device=self.device)
        c = self.counts
        c[0].index_add_(0, idx, fg_i.to(self.device))
        c[1].index_add_(0, idx, fg_u.to(self.device))
        c[2].index_add_(0, idx, torch.ones_like(idx))
        totals = torch.stack([fg_i.sum(), bg_i.sum(), fg_u.sum(), bg_u.sum(),
                              torch.tensor(len(cls), device=fg_i.device)])
        c[3, :5] += totals.to(self.device)

    def all_reduce(self) -> None:
        """Sum the counts over all ranks (call once per evaluation, on every rank)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.counts, op=dist.ReduceOp.SUM)

    def compute(self) -> dict[str, Any]:
        """``{"mIoU", "FB-IoU"}`` in percent, ``"class_IoU"`` ``{class id: IoU %}`` (NaN for
        classes without episodes) and ``"episodes"`` (count)."""
        c = self.counts.detach().cpu().double().numpy()
        k = len(self.class_ids)
        iou = _ratio(c[0, :k], np.where(c[2, :k] > 0, c[1, :k], 0)) * 100
        fg = _ratio(c[3, 0:1], c[3, 2:3])[0]
        bg = _ratio(c[3, 1:2], c[3, 3:4])[0]
        return {"mIoU": _nanmean(iou),
                "FB-IoU": _nanmean(np.array([fg, bg]) * 100),
                "class_IoU": {cid: float(v) for cid, v in zip(self.class_ids, iou)},
                "episodes": int(c[3, 4])}
