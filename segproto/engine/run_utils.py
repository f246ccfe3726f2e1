"""Helpers of the trainer that hold no state: determinism switches, the logged scalars of an
evaluation, the stream check of semi-supervised methods and strict-JSON cleaning."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

__all__ = ["setup_determinism", "eval_scalars", "check_streams", "json_clean", "short_list"]


def setup_determinism(deterministic: bool) -> None:
    """Deterministic kernels (cuBLAS workspace, torch deterministic algorithms, cuDNN) when asked."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def short_list(names: list) -> str:
    """The first three names and how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def eval_scalars(metrics: dict) -> dict[str, float]:
    """The logged scalars of an evaluation: aAcc/mIoU/mAcc and mIoU per taxonomy level, or the
    few-shot mIoU and FB-IoU."""
    if "FB-IoU" in metrics:
        return {"mIoU": metrics["mIoU"], "FB-IoU": metrics["FB-IoU"]}
    levels = {f"mIoU_{k}": v["mIoU"] for k, v in metrics.get("levels", {}).items()}
    return {"aAcc": metrics["aAcc"], "mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"], **levels}


def check_streams(cfg: Any, method: Any) -> None:
    """A semi-supervised method needs ``data.unlabeled_split``; any other method must not get one."""
    semi = method.uses_unlabeled
    if semi and not cfg.data.unlabeled_split:
        raise ValueError(f"method.name {cfg.method.name!r} is semi-supervised: set data.unlabeled_split "
                         "(e.g. train_unlabeled_1-8, with data.train_split train_labeled_1-8)")
    if cfg.data.unlabeled_split and not semi:
        raise ValueError(f"data.unlabeled_split is {cfg.data.unlabeled_split!r} but method.name "
                         f"{cfg.method.name!r} does not use unlabelled images (mean_teacher or prcl do)")


def json_clean(o: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python, recursively."""
    if isinstance(o, dict):
        return {str(k): json_clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
