"""segproto: pixel-contrastive and prototype learning for semantic segmentation.

Importing the package is cheap: submodules (``segproto.ops``, ``segproto.data``, ...) are
imported on first use.
"""

__version__ = "0.1.0"

import importlib as _importlib

_SUBMODULES = ("ops", "data", "models", "losses", "engine", "evaluation", "config")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f"segproto.{name}")
    raise AttributeError(f"module 'segproto' has no attribute {name!r}")
