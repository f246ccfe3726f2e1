"""Shared argument handling of the ``python -m segproto.*`` entry points."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from segproto.config import ConfigError, load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file")
    p.add_argument("--cfg-options", "--opts", dest="cfg_options", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.iters=100 data.batch_size=4")


def load_or_exit(path: str, overrides: Sequence[str], debug: bool = False):
    """Loads and validates the config; on error prints the message (no traceback unless
    ``debug``) and exits 2."""
    try:
        return load_config(path, overrides)
    except (ConfigError, FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        if debug:
            raise
        print(f"error: {_message(exc)}", file=sys.stderr)
        sys.exit(2)


def _message(exc: BaseException) -> str:
    """One line: the first line of the message (a KeyError's without the quotes ``str`` adds),
    with the file name of an OS error whose text does not hold it."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    lines = str(text).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


#: What a bad input raises below an entry point (configs, data, checkpoints, paths, non-finite
#: losses): reported in one line with exit status 1.
INPUT_ERRORS = (ValueError, KeyError, OSError, RuntimeError)


def run_or_exit(fn: Callable[[], Any], debug: bool = False) -> int:
    """Runs ``fn``; a bad input (:data:`INPUT_ERRORS`) prints ``error: ...`` on one line (the
    traceback only with ``debug``) and returns 1; success returns 0."""
    try:
        fn()
    except INPUT_ERRORS as exc:
        if debug:
            raise
        print(f"error: {_message(exc)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    return 0


def trained_or_exit(cfg, ckpt: str, split: str, device="cpu"):
    """:func:`segproto.engine.loading.load_for_inference`; a bad checkpoint prints its message
    (no traceback) and exits 1."""
    from segproto.engine.loading import load_for_inference

    try:
        return load_for_inference(cfg, ckpt, split, device)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def add_test_mode_args(p: argparse.ArgumentParser) -> None:
    """``--mode whole|slide --crop H W --stride H W --flip/--no-flip --scales R ...``
    (:class:`segproto.tta.TestMode`); a flag that is given overrides the config's ``test`` section."""
    g = p.add_argument_group("test-time mode (mmseg semantics; docs/inference.md); default: the config's test.*")
    g.add_argument("--mode", choices=("whole", "slide"), help="whole image or sliding window (default: test.mode)")
    g.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="slide: window size (default: test.crop)")
    g.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide: window step (default: test.stride)")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="also the left-right flipped image, softmax averaged (default: test.flip)")
    g.add_argument("--scales", type=float, nargs="+", metavar="R",
                   help="resize ratios of the image, e.g. 0.5 0.75 1.0 1.25 1.5 1.75, softmax averaged "
                        "(default: test.scales)")


def test_mode_or_exit(a: argparse.Namespace, test_cfg=None):
    """The :class:`segproto.tta.TestMode` of ``test_cfg`` (a config's ``test`` section; None: its
    defaults) with the flags that were given on top; a bad combination prints one line and exits 2.
    In whole mode the section's ``crop``/``stride`` are not used; as flags they are an error."""
    from segproto.config import TestConfig
    from segproto.tta import TestMode

    t = test_cfg if test_cfg is not None else TestConfig()
    mode = a.mode or t.mode
    if mode == "whole" and (a.crop or a.stride):
        print("error: --crop/--stride need --mode slide (or test.mode: slide)", file=sys.stderr)
        sys.exit(2)
    crop, stride = (a.crop or t.crop, a.stride or t.stride) if mode == "slide" else (None, None)
    try:
        return TestMode(mode, tuple(crop) if crop else None, tuple(stride) if stride else None,
                        t.flip if a.flip is None else a.flip, tuple(a.scales or t.scales))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
