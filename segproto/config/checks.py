"""Value checks shared by the config sections: an :data:`Issue` names a key relative to its section
and what is wrong; :func:`bound` and :func:`nonempty` produce them (NaN fails every bound)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

__all__ = ["Issue", "bound", "nonempty", "same_length"]

Issue = tuple[str, str]  # (dotted key relative to the section, message)


def bound(key: str, value: Any, *, gt: float | None = None, ge: float | None = None,
          lt: float | None = None, le: float | None = None) -> list[Issue]:
    """Check a number (or every number of a tuple/list) against bounds; ``None`` passes.

    Written as ``not (v > gt)`` so that NaN fails every bound.
    """
    if value is None:
        return []
    for v in value if isinstance(value, (tuple, list)) else [value]:
        for ok, text in ((gt is None or v > gt, f"> {gt}"), (ge is None or v >= ge, f">= {ge}"),
                         (lt is None or v < lt, f"< {lt}"), (le is None or v <= le, f"<= {le}")):
            if not ok:
                what = "every item must be" if isinstance(value, (tuple, list)) else "must be"
                return [(key, f"{what} {text}, got {value!r}")]
    return []


def nonempty(key: str, value: Optional[str]) -> list[Issue]:
    """A string option that must not be empty (``None`` passes)."""
    return [(key, "must not be empty")] if value is not None and not value.strip() else []


def same_length(key: str, value: Optional[Sequence], other_key: str,
                 other: Optional[Sequence]) -> list[Issue]:
    if value is None or other is None or len(value) == len(other):
        return []
    return [(key, f"has {len(value)} items but '{other_key}' has {len(other)}")]
