"""Sweep outputs: ``results.csv``, ``best_config.yaml`` and the mIoU-per-parameter plot. Needs no Ray."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from search.space import Param, SearchSpace, apply_params
from segproto.config import config_from_dict, save_config

RESULTS_CSV = "results.csv"
BEST_CONFIG = "best_config.yaml"
PLOT = "mIoU_vs_params.png"
#: ``status`` of a row: reached ``train.iters`` / stopped by ASHA / failed / not run to its end.
STATUSES = ("completed", "early_stopped", "error", "unfinished")
_COLOURS = dict(zip(STATUSES, ("tab:blue", "tab:orange", "tab:red", "tab:gray")))


@dataclass(frozen=True)
class TrialRow:
    """One trial of a sweep.

    Attributes:
        trial_id: Tune's trial id.
        status: One of :data:`STATUSES`.
        params: The sampled value of every swept key.
        best_miou: Highest validation mIoU it reported (``None``: no evaluation reached).
        best_iter: Iteration of ``best_miou`` (0 when none).
        iterations: Last iteration it evaluated (0 when none).
    """

    trial_id: str
    status: str
    params: Mapping[str, Any]
    best_miou: Optional[float]
    best_iter: int
    iterations: int


def trial_row(trial_id: str, tune_status: str, params: Mapping[str, Any],
              reports: Sequence[Mapping[str, Any]], iters: int) -> TrialRow:
    """A row from the ``{"iter": N, "mIoU": x}`` reports of one trial and its Tune status.

    ``ERROR`` -> ``error``; ``TERMINATED`` -> ``completed`` if it evaluated its own budget (the
    trial's sampled ``train.iters`` when the space has that key, else ``iters``, the config's),
    else ``early_stopped``; anything else (pending, paused, running when the sweep was
    interrupted) -> ``unfinished``.
    """
    iters = int(params.get("train.iters", iters))
    scored = [r for r in reports if isinstance(r.get("mIoU"), (int, float)) and math.isfinite(r["mIoU"])]
    best = max(scored, key=lambda r: r["mIoU"], default=None)
    last = max((int(r["iter"]) for r in scored), default=0)
    if tune_status == "ERROR":
        status = "error"
    elif tune_status == "TERMINATED":
        status = "completed" if last >= iters else "early_stopped"
    else:
        status = "unfinished"
    return TrialRow(trial_id, status, dict(params), None if best is None else float(best["mIoU"]),
                    0 if best is None else int(best["iter"]), last)


def best_row(rows: Sequence[TrialRow]) -> Optional[TrialRow]:
    """The row with the highest ``best_miou`` (the first one on a tie); ``None`` if none has one."""
    scored = [r for r in rows if r.best_miou is not None]
    return max(scored, key=lambda r: r.best_miou, default=None)


def write_csv(rows: Sequence[TrialRow], space: SearchSpace, path: Path) -> None:
    """One line per trial: id, status, best mIoU and its iteration, last iteration, then each key."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["trial_id", "status", "best_mIoU", "best_iter", "iterations", *space.keys])
        for r in rows:
            miou = "" if r.best_miou is None else f"{r.best_miou:.4f}"
            out.writerow([r.trial_id, r.status, miou, r.best_iter, r.iterations,
                          *(r.params.get(k, "") for k in space.keys)])


def write_best_config(base: Mapping[str, Any], row: TrialRow, path: Path) -> None:
    """``base`` (the user's config, absolute paths) with the best trial's values, as a full YAML
    config that ``python -m segproto.train`` runs as is."""
    save_config(config_from_dict(apply_params(base, row.params), f"best trial {row.trial_id}"), path)


def plot_params(rows: Sequence[TrialRow], space: SearchSpace, path: Path) -> None:
    """Best mIoU of each trial against each swept parameter (one panel per key), coloured by status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(space.params)
    cols = min(n, 4)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    for ax, param in zip(axes.flat, space.params):
        _panel(ax, param, [r for r in rows if r.best_miou is not None])
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=s) for s, c in _COLOURS.items()
               if any(r.status == s and r.best_miou is not None for r in rows)]
    fig.suptitle("best validation mIoU of each trial", fontsize="medium")
    fig.legend(handles=handles, loc="upper right", ncols=len(handles) or 1, fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _panel(ax: Any, param: Param, rows: Sequence[TrialRow]) -> None:
    values = [r.params.get(param.key) for r in rows]
    if param.kind == "choice":
        labels = [str(c) for c in param.args]
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize="small")
        ax.set_xlim(-0.5, len(labels) - 0.5)
        values = [labels.index(str(v)) for v in values]
    elif param.kind == "loguniform":
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.set_xlim(param.args[0] / 1.1, param.args[1] * 1.1)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 0.03 0.05 0.1 0.2 0.5: no crowding
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.scatter(values, [r.best_miou for r in rows], c=[_COLOURS[r.status] for r in rows], s=24)
    ax.set_title(param.key, fontsize="small")
    ax.set_ylabel("best mIoU")
    ax.grid(alpha=0.3)
