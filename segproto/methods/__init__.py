"""Methods: a segmentor plus training-only parts and losses, trained by the one trainer.

A method is an ``nn.Module`` whose ``forward(img, gt, it)`` returns a dict of named loss terms
(keys starting with ``loss``; the trainer sums them) and optional diagnostics (other keys, logged),
in training mode, and logits at input size in eval mode. ``deployable()`` returns the plain
segmentor: everything else is training-only and is dropped by ``python -m segproto.export``.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import CEMethod, SegMethod
from .hdmnet import HDMNetMethod
from .hiposeg import HiPoSegMethod
from .pico import PiCoMethod
from .semi import MeanTeacherMethod, PRCLMethod

# The one registry: method name -> builder(cfg, num_classes, taxonomy) -> SegMethod.
METHODS: dict[str, Callable[..., SegMethod]] = {"ce": CEMethod.from_config}
METHODS["pico"] = PiCoMethod.from_config
METHODS["hiposeg"] = HiPoSegMethod.from_config
METHODS["mean_teacher"] = MeanTeacherMethod.from_config
METHODS["prcl"] = PRCLMethod.from_config
METHODS["hdmnet"] = HDMNetMethod.from_config


def is_episodic(name: str) -> bool:
    """True for few-shot methods trained and evaluated on episodes (their class sets
    ``episodic = True``); see :mod:`segproto.engine.fewshot`."""
    builder = METHODS.get(name)
    return bool(getattr(getattr(builder, "__self__", None), "episodic", False))


def build_method(cfg: Any, num_classes: int, taxonomy=None) -> SegMethod:
    """Builds ``cfg.method.name`` (see :data:`METHODS`)."""
    name = cfg.method.name
    if name not in METHODS:
        import difflib

        hint = difflib.get_close_matches(name, list(METHODS), 1)
        raise ValueError(f"method.name: unknown method {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + f"; available: {sorted(METHODS)}")
    return METHODS[name](cfg, num_classes, taxonomy)


__all__ = ["METHODS", "build_method", "is_episodic", "SegMethod", "CEMethod"]
