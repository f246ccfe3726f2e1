"""Fitting a config's schedule points to the length of its run.

Schedule points given in iterations (the LR warm-up ``sched.warmup_iters``, PiCo's
``loss.contrast.warmup_iters``) are clamped to ``train.iters``, so that shortening a run takes one
override (``train.iters=20``). Fractions of the run (HiPoSeg's stage starts) need nothing; the
evaluation and checkpoint intervals need nothing either (the last iteration always evaluates and
saves). Negative values stay config errors (the section checks).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

__all__ = ["ITERATION_POINTS", "Fitted", "fit_to_run", "fit_line"]

#: Dotted keys counted in iterations, with the methods that read them (None: every method) and,
#: for a method term, what a value at or past ``train.iters`` means for the run (None: no term).
ITERATION_POINTS = (
    ("sched.warmup_iters", None, None),
    ("loss.contrast.warmup_iters", ("pico",), "loss_contrast stays 0 for the whole run (it switches on after "
                                              "this iteration)"),
)


class Fitted(NamedTuple):
    cfg: Any               # the config with every clamped value
    clamped: list[str]     # "key A -> B" per clamped key
    warnings: list[str]    # one line per method term that never switches on


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _replace(cfg: Any, key: str, value: Any) -> Any:
    head, _, rest = key.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: _replace(getattr(cfg, head), rest, value)})


def fit_to_run(cfg: Any) -> Fitted:
    """Clamps every iteration-valued schedule point above ``train.iters`` to ``train.iters``.

    Warm-ups are clamped to the run, not scaled: the config does not say how long a run its values
    were chosen for. A term of the config's method whose warm-up reaches ``train.iters`` (before
    clamping) never contributes; that is a warning line, not an error.
    """
    total = cfg.train.iters
    clamped, warnings = [], []
    for key, methods, meaning in ITERATION_POINTS:
        if methods is not None and cfg.method.name not in methods:
            continue
        value = _get(cfg, key)
        if meaning is not None and value >= total:
            warnings.append(f"{key} ({value}) >= train.iters ({total}): {meaning}")
        if value > total:
            cfg = _replace(cfg, key, total)
            clamped.append(f"{key} {value} -> {total}")
    return Fitted(cfg, clamped, warnings)


def fit_line(fitted: Fitted, total: int) -> str:
    """The one log line of a clamp ('' when nothing was clamped)."""
    if not fitted.clamped:
        return ""
    return (f"schedule fitted to train.iters={total} (clamped to the run, not scaled): "
            + ", ".join(fitted.clamped))
