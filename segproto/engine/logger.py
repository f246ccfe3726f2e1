"""Run outputs: ``scalars.jsonl`` (+ optional TensorBoard), log lines, and end-of-run plots."""

from __future__ import annotations

import json
import math
import resource
from pathlib import Path
from typing import Any, Mapping, Optional

import torch


def memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA max allocated, or the process's peak RSS on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class ScalarWriter:
    """Appends one JSON object per record to ``work_dir/scalars.jsonl``; mirrors to TensorBoard.

    On resume, records after the resumed iteration are dropped first, so the file reads as if
    the run had never stopped.
    """

    def __init__(self, work_dir: Path, tensorboard: bool = False, resume_iter: Optional[int] = None) -> None:
        self.path = Path(work_dir) / "scalars.jsonl"
        if resume_iter is not None and self.path.is_file():
            keep = [ln for ln in self.path.read_text().splitlines() if _iter_of(ln) <= resume_iter]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        elif resume_iter is None and self.path.is_file():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(work_dir) / "tb"))

    def write(self, record: Mapping[str, Any]) -> None:
        """Appends ``record``; NaN/inf become ``null`` (every line is strict JSON)."""
        with open(self.path, "a") as f:
            f.write(json.dumps(_strict(record), allow_nan=False) + "\n")
        if self.tb is not None:
            step = int(record.get("iter", 0))
            for k, v in record.items():
                if k != "iter" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _iter_of(line: str) -> float:
    """The iteration of a scalars line; a line cut short by a killed process is dropped (inf)."""
    try:
        return json.loads(line).get("iter", 0) if line else math.inf
    except ValueError:
        return math.inf


def _strict(o: Any) -> Any:
    if isinstance(o, Mapping):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def log_line(it: int, total: int, lr: float, losses: Mapping[str, float], t_iter: float, t_data: float,
             mem: float, eta: float) -> str:
    terms = "  ".join(f"{k}: {v:.4f}" for k, v in losses.items())
    return (f"iter {it}/{total}  lr: {lr:.3e}  {terms}  time: {t_iter:.3f}s  data: {t_data:.3f}s  "
            f"mem: {mem:.0f}MiB  eta: {format_eta(eta)}")


def save_plots(work_dir: Path, metrics: Mapping[str, Any]) -> list[Path]:
    """``curves.png`` (losses, learning rate, validation mIoU and ``mIoU_<level>`` of every taxonomy
    level, from ``scalars.jsonl``) and ``per_class_iou.png`` (per-class IoU bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work_dir = Path(work_dir)
    scalars = work_dir / "scalars.jsonl"  # absent when a final checkpoint is resumed into a new dir
    recs = [json.loads(ln) for ln in scalars.read_text().splitlines() if ln] if scalars.is_file() else []
    train = [r for r in recs if r.get("mode") == "train"]
    val = [r for r in recs if r.get("mode") == "val"]
    out = []
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for key in sorted({k for r in train for k in r if k.startswith("loss")}):
        pts = [(r["iter"], r[key]) for r in train if key in r]
        axes[0].plot(*zip(*pts), label=key)
    axes[0].set(xlabel="iteration", ylabel="loss", title="training losses")
    if axes[0].lines:
        axes[0].legend(fontsize=8)
    lr = [(r["iter"], r["lr"]) for r in train if r.get("lr") is not None]
    if lr:
        axes[1].plot(*zip(*lr), label="lr")
    axes[1].set(xlabel="iteration", ylabel="learning rate", title="learning rate (first parameter group)")
    for key in ["mIoU"] + sorted({k for r in val for k in r if k.startswith("mIoU_")}):
        pts = [(r["iter"], r[key]) for r in val if r.get(key) is not None]
        if pts:
            axes[2].plot(*zip(*pts), marker="o", label=key)
    axes[2].set(xlabel="iteration", ylabel="mIoU (%)", title="validation mIoU per taxonomy level")
    if val:
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    out.append(work_dir / "curves.png")
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)
    names, ious = metrics.get("classes") or [], metrics.get("IoU") or []
    if names:
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names)), 4))
        ax.bar(range(len(names)), [0 if v is None or v != v else v for v in ious])
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set(ylabel="IoU (%)", title=f"per-class IoU (mIoU {metrics['mIoU']:.2f})")
        fig.tight_layout()
        out.append(work_dir / "per_class_iou.png")
        fig.savefig(out[-1], dpi=100)
        plt.close(fig)
    return out
