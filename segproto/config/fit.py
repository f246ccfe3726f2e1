"""Fitting a config's schedule points to the length of its run.

Schedule points given in iterations (the LR warm-up ``sched.warmup_iters``, PiCo's
``loss.contrast.warmup_iters``) are clamped to ``train.iters``, so that shortening a run takes one
override (``train.iters=20``). Fractions of the run (HiPoSeg's stage starts, :data:`FRACTION_POINTS`)
need nothing; the evaluation and checkpoint intervals need nothing either (the last iteration always
evaluates and saves). Negative values stay config errors (the section checks).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

__all__ = ["ITERATION_POINTS", "FRACTION_POINTS", "Fitted", "fit_to_run", "fit_line", "fraction_to_iteration",
           "term_starts"]

#: Dotted keys counted in iterations, with the methods that read them (None: every method) and,
#: for a method term, what a value at or past ``train.iters`` means for the run (None: no term).
ITERATION_POINTS = (
    ("sched.warmup_iters", None, None),
    ("loss.contrast.warmup_iters", ("pico",), "loss_contrast stays 0 for the whole run (it switches on after "
                                              "this iteration)"),
)


#: Dotted keys of method-term starts given as fractions of ``train.iters``, with their methods.
FRACTION_POINTS = (
    ("loss.hiposeg.coarse_start", ("hiposeg",)),
    ("loss.hiposeg.fine_start", ("hiposeg",)),
    ("loss.hiposeg.align_start", ("hiposeg",)),
)


def fraction_to_iteration(frac: float, total: int) -> int:
    """``floor(frac * total)``, rounded first so that 0.075 * 1000 is 75, not 74."""
    return math.floor(round(frac * total, 6))


def term_starts(method: str) -> list[tuple[str, str]]:
    """``(key, unit)`` of every point at which a training term of ``method`` switches on, the unit
    ``iters`` (the term is 0 up to and including that iteration) or ``fraction`` (of ``train.iters``,
    through :func:`fraction_to_iteration`). Before its first start a run of ``method`` trains plain CE."""
    return ([(key, "iters") for key, methods, meaning in ITERATION_POINTS
             if meaning is not None and methods is not None and method in methods]
            + [(key, "fraction") for key, methods in FRACTION_POINTS if method in methods])


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
