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
    """``--mode whole|slide --crop H W --stride H W --flip --scales R ...`` (:class:`segproto.tta.TestMode`)."""
    g = p.add_argument_group("test-time mode (mmseg semantics; docs/inference.md)")
    g.add_argument("--mode", choices=("whole", "slide"), default="whole", help="whole image (default) or sliding window")
    g.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="slide: window size")
    g.add_argument("--stride", type=int, nargs=2, metavar=("H", "W"), help="slide: window step")
    g.add_argument("--flip", action="store_true", help="also the left-right flipped image (softmax averaged)")
    g.add_argument("--scales", type=float, nargs="+", default=[1.0], metavar="R",
                   help="resize ratios of the image, e.g. 0.5 0.75 1.0 1.25 1.5 1.75 (softmax averaged)")


def test_mode_or_exit(a: argparse.Namespace):
    """The :class:`segproto.tta.TestMode` of the parsed flags; a bad combination prints one line and exits 2."""
    from segproto.tta import TestMode

    if a.mode == "whole" and (a.crop or a.stride):
        print("error: --crop/--stride need --mode slide", file=sys.stderr)
        sys.exit(2)
    try:
        return TestMode(a.mode, tuple(a.crop) if a.crop else None, tuple(a.stride) if a.stride else None,
                        a.flip, tuple(a.scales))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
