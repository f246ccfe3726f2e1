"""The config sections of the methods, one module per method, each registering its dataclasses.

A section is a dataclass decorated with :func:`section`, which names where it sits in the config
tree (``"loss.contrast"`` or a top-level ``"semi"``). :mod:`segproto.config.schema` imports every
module of this package and builds ``LossConfig`` and ``Config`` from the core sections plus the
registered ones, so adding a method's section means adding one module here; loading, validation,
did-you-mean messages, overrides and saving pick it up. A section may define
``check(self) -> list[Issue]`` for value checks (helpers in :mod:`segproto.config.checks`).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, TypeVar

__all__ = ["section", "SECTIONS", "load_sections"]

#: dotted path (``"loss.contrast"``, ``"semi"``) -> (rank, dataclass); rank orders the fields.
SECTIONS: dict[str, tuple[int, type]] = {}
#: the parents a section may register under: the root config and its ``loss`` section.
PARENTS = ("", "loss")

T = TypeVar("T", bound=type)


def section(path: str, rank: int = 100) -> Callable[[T], T]:
    """Class decorator: places the dataclass at ``path`` of the config tree (``rank`` orders the
    sections of one parent: lower first; equal ranks keep registration order)."""
    parent, _, name = path.rpartition(".")
    if parent not in PARENTS or not name.isidentifier():
        raise ValueError(f"config section {path!r}: expected 'NAME' or 'loss.NAME'")

    def register(cls: T) -> T:
        old = SECTIONS.get(path)
        if old is not None and old[1].__qualname__ != cls.__qualname__:
            raise ValueError(f"config section {path!r} is already {old[1].__name__}")
        SECTIONS[path] = (rank, cls)
        return cls
    return register


def load_sections() -> dict[str, tuple[int, type]]:
    """Imports every module of this package (each registers its sections); returns the registry."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")
    return SECTIONS


def under(parent: str) -> list[tuple[str, type]]:
    """The registered sections directly under ``parent`` (``""`` or ``"loss"``) as (name, class),
    in rank order."""
    items = [(rank, path.rpartition(".")[2], cls) for path, (rank, cls) in SECTIONS.items()
             if path.rpartition(".")[0] == parent]
    return [(name, cls) for _, name, cls in sorted(items, key=lambda t: t[0])]
