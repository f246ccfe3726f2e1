"""Console output shared by the trainer and the methods."""

from __future__ import annotations

import sys

__all__ = ["echo"]


def echo(msg: str) -> None:
    """Prints a line without breaking a tqdm bar."""
    try:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stdout)
    except ImportError:  # pragma: no cover
        print(msg, flush=True)
