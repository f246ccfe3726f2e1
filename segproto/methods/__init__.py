"""Methods: a segmentor plus training-only parts and losses, trained by the one trainer.

Every method implements :class:`~segproto.methods.protocol.Method` (the hooks the engine calls,
with their defaults) and registers itself with ``@register_method("name")``; importing this
package imports every method module, which fills :data:`METHODS`. ``deployable()`` returns the
inference network: everything else is training-only and is dropped by ``python -m segproto.export``.
"""

from __future__ import annotations

from . import hdmnet, hiposeg, pico, semi  # noqa: F401  (each module registers its methods)
from .base import CEMethod, SegMethod
from .protocol import METHOD_CLASSES, METHODS, Method, build_method, is_episodic, register_method

__all__ = ["METHODS", "METHOD_CLASSES", "Method", "register_method", "build_method", "is_episodic", "SegMethod",
           "CEMethod"]
