"""Argument handling shared by the entry points."""

import argparse

from segproto.cli import add_config_args


def test_repeated_override_flags_accumulate():
    """`--cfg-options a=1 --opts b=2` keeps both (a plain nargs='+' would drop the first)."""
    p = argparse.ArgumentParser()
    add_config_args(p)
    args = p.parse_args(["c.yaml", "--cfg-options", "a=1", "b=2", "--opts", "c=3"])
    assert args.cfg_options == ["a=1", "b=2", "c=3"]
    assert p.parse_args(["c.yaml"]).cfg_options == []
