"""Shared argument handling of the ``python -m segproto.*`` entry points."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
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
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)


def one_line(exc: BaseException) -> str:
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
    traceback only with ``debug``) and returns 1; success returns ``fn``'s exit status when it
    returns an int, else 0."""
    try:
        result = fn()
    except INPUT_ERRORS as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)} (--debug shows the traceback)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def add_debug_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")


def output_path(path: str | os.PathLike, option: str, force: bool = False, folder: bool = False) -> Path:
    """Makes an output's folder (the output itself with ``folder``) and checks that it can be
    written; an existing output file is refused unless ``force``. Returns the path.

    Raises:
        FileExistsError, NotADirectoryError, PermissionError, OSError: one line naming ``option``,
            the path and what was expected.
    """
    p = Path(path).expanduser()
    if not folder and p.is_dir():
        raise IsADirectoryError(f"{option} {p}: is a folder; expected a file name")
    if not folder and p.exists() and not force:
        raise FileExistsError(f"{option} {p}: the file exists; add --force to replace it")
    if folder and p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{option} {p}: is a file; expected a folder")
    where = p if folder else p.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"{option} {p}: cannot create the folder {where} ({exc.strerror or exc})") from None
    if not os.access(where, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {p}: the folder {where} is not writable")
    return p


def refuse_existing(paths: Sequence[Path], option: str, force: bool) -> None:
    """Raises FileExistsError naming the first of ``paths`` that exists (unless ``force``)."""
    there = [p for p in paths if p.exists()]
    if there and not force:
        more = f" (and {len(there) - 1} more)" if len(there) > 1 else ""
        raise FileExistsError(f"{option}: {there[0]} exists{more}; add --force to replace it")


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
