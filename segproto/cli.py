"""Shared argument handling of the ``python -m segproto.*`` entry points."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from segproto.config import ConfigError, load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config file")
    p.add_argument("--cfg-options", "--opts", dest="cfg_options", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. train.iters=100 data.batch_size=4")


def load_or_exit(path: str, overrides: Sequence[str]):
    """Loads and validates the config; on error prints the message (no traceback) and exits 2."""
    try:
        return load_config(path, overrides)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def trained_or_exit(cfg, ckpt: str, split: str, device="cpu"):
    """:func:`segproto.engine.loading.load_for_inference`; a bad checkpoint prints its message
    (no traceback) and exits 1."""
    from segproto.engine.loading import load_for_inference

    try:
        return load_for_inference(cfg, ckpt, split, device)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
