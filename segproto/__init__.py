"""segproto: pixel-contrastive and prototype learning for semantic segmentation.

Importing the package is cheap: submodules (``segproto.ops``, ``segproto.data``, ...) are
imported on first use. ``segproto.load_model(path)`` and ``segproto.inference(model, image)``
(:mod:`segproto.deploy`) load and run a checkpoint or an exported model.
"""

__version__ = "0.1.0"

import importlib as _importlib

_SUBMODULES = ("ops", "data", "models", "losses", "engine", "evaluation", "config", "deploy", "tta")
#: Top-level functions, defined in a submodule and imported on first use.
_FUNCTIONS = {"load_model": "deploy", "inference": "deploy", "TestMode": "tta"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f"segproto.{name}")
    if name in _FUNCTIONS:
        return getattr(_importlib.import_module(f"segproto.{_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module 'segproto' has no attribute {name!r}")
