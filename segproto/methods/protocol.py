"""The method protocol: every hook the trainer, the evaluation and the deployment code call on a
method, each with its default, and the registry that maps ``method.name`` to a method class.

A method is an ``nn.Module`` subclass of :class:`Method`. The engine calls nothing else:

==============================  =================================================================
``from_config(cfg, k, tax)``    classmethod: build from a config, ``k`` classes at the training level
``forward(img, gt, it, **x)``   training: dict of named terms (keys ``loss*`` are summed, others
                                are logged diagnostics); eval: logits ``[B, K, H, W]``. ``x`` holds
                                the batch's extra tensors (episodic methods: supports)
``after_step(it)``              after each optimizer step (default: nothing; e.g. an EMA teacher)
``feature_cache()``             context manager around an evaluation (default: nothing; HDMNet
                                memoises its frozen backbone's features)
``deployable()``                the inference network, without training-only parts
``deployable_key(cfg)``         classmethod: its prefix in the method's state dict
``build_deployable(cfg, k)``    classmethod: an untrained inference network for a checkpoint
``episodic``                    class attribute (False): trained and evaluated on few-shot episodes
``uses_unlabeled``              class attribute (False): needs ``data.unlabeled_split``
``find_unused_parameters``      class attribute (False): DDP must look for parameters without grad
==============================  =================================================================

Registering: decorate the class with ``@register_method("name")``; :data:`METHODS` and
:func:`build_method` then know it (docs/architecture.md, "Adding a method").
"""

from __future__ import annotations

import contextlib
import difflib
from typing import Any, Callable, ContextManager, Type, TypeVar

from torch import nn

__all__ = ["Method", "METHODS", "METHOD_CLASSES", "register_method", "build_method", "is_episodic"]


class Method(nn.Module):
    """Base of every method: the hooks the engine calls, with their defaults (see the module
    docstring). Subclasses implement ``from_config``, ``forward`` and ``deployable``."""

    episodic: bool = False
    uses_unlabeled: bool = False
    find_unused_parameters: bool = False

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int, taxonomy=None) -> "Method":
        raise NotImplementedError(f"{cls.__name__}.from_config")

    def after_step(self, it: int) -> None:
        """Called by the trainer after every optimizer step (``it`` is the finished iteration)."""

    def feature_cache(self) -> ContextManager:
        """A block the evaluation runs in (memos valid for the whole evaluation)."""
        return contextlib.nullcontext()

    def deployable(self) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__}.deployable")

    @classmethod
    def deployable_key(cls, cfg: Any) -> str:
        raise NotImplementedError(f"{cls.__name__}.deployable_key")

    @classmethod
    def build_deployable(cls, cfg: Any, num_classes: int) -> nn.Module:
        raise NotImplementedError(f"{cls.__name__}.build_deployable")


#: ``method.name`` -> method class, filled by :func:`register_method`.
METHOD_CLASSES: dict[str, Type[Method]] = {}
#: ``method.name`` -> builder ``(cfg, num_classes, taxonomy) -> Method`` (the classes' ``from_config``).
METHODS: dict[str, Callable[..., Method]] = {}

M = TypeVar("M", bound=Type[Method])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: makes the method buildable as ``method.name: <name>``."""
    def register(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"register_method({name!r}): {cls!r} is not a segproto.methods.Method subclass")
        if name in METHOD_CLASSES and METHOD_CLASSES[name] is not cls:
            raise ValueError(f"register_method: {name!r} is already {METHOD_CLASSES[name].__name__}")
        METHOD_CLASSES[name] = cls
        METHODS[name] = cls.from_config
        return cls
    return register


def is_episodic(name: str) -> bool:
    """True for few-shot methods, trained and evaluated on episodes (see :mod:`segproto.engine.fewshot`)."""
    cls = METHOD_CLASSES.get(name)
    return bool(cls is not None and cls.episodic)


def build_method(cfg: Any, num_classes: int, taxonomy=None) -> Method:
    """Builds ``cfg.method.name``; an unknown name is a one-line error with the closest match."""
    name = cfg.method.name
    if name not in METHODS:
        hint = difflib.get_close_matches(name, list(METHODS), 1)
        raise ValueError(f"method.name: unknown method {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + f"; available: {sorted(METHODS)}")
    return METHODS[name](cfg, num_classes, taxonomy)
