"""Helpers of the trainer that hold no state: determinism switches, the logged scalars of an
evaluation, the stream check of semi-supervised methods, the finiteness check of a checkpoint's
state and strict-JSON cleaning."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from segproto.utils import dist as sdist

__all__ = ["setup_determinism", "eval_scalars", "check_streams", "json_clean", "short_list", "NonFiniteLossError",
           "check_finite_state"]


class NonFiniteLossError(RuntimeError):
    """A loss, a BatchNorm statistic or a saved tensor became NaN/inf; the run stops, nothing is
    saved, and earlier checkpoints stay as they were."""


def check_finite_state(state: dict, it: int, device: torch.device, world: int, last_ckpt: Any) -> None:
    """A checkpoint is written only when every floating tensor of the model and optimizer
    state is finite (on every rank), so every kept checkpoint can be resumed."""
    bad = [f"model.{k}" for k, v in state["model"].items() if torch.is_tensor(v) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    for pid, st in state["optimizer"].get("state", {}).items():
        bad += [f"optimizer.state[{pid}].{k}" for k, v in st.items() if torch.is_tensor(v)
                and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    flag = torch.tensor(float(not bad), device=device)
    if sdist.all_reduce_sum(flag).item() < world:
        raise NonFiniteLossError(f"non-finite weights at iteration {it} ({short_list(bad or ['on another rank'])}); "
                                 f"training stopped, iter_{it}.pth not saved. "
                                 f"Last good checkpoint: {last_ckpt or 'none yet'}")


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
