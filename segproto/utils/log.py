"""Console output shared by the trainer and the methods, with sinks that also receive every line
(the trainer's ``train.log``)."""

from __future__ import annotations

import sys
from typing import Callable

__all__ = ["echo", "add_sink", "remove_sink"]

_SINKS: list[Callable[[str], None]] = []


def add_sink(sink: Callable[[str], None]) -> None:
    """``sink(line)`` is called with every message :func:`echo` prints, until :func:`remove_sink`."""
    _SINKS.append(sink)


def remove_sink(sink: Callable[[str], None]) -> None:
    if sink in _SINKS:
        _SINKS.remove(sink)


def echo(msg: str) -> None:
    """Prints a line without breaking a tqdm bar, and hands it to every sink."""
    try:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stdout)
    except ImportError:  # pragma: no cover
        print(msg, flush=True)
    for sink in list(_SINKS):
        sink(msg)
