"""A method's config section registers itself: no line in segproto/config/schema.py."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import segproto.config
from segproto.config import Config, schema_keys
from segproto.config.sections import SECTIONS, section


def test_every_method_section_is_in_the_tree_once():
    assert set(SECTIONS) == {"loss.contrast", "loss.hiposeg", "loss.prcl", "semi", "fewshot"}
    keys = schema_keys(Config)
    for path, (_, cls) in SECTIONS.items():
        assert keys.count(path) == 1
        assert type(eval("Config()." + path)) is cls  # noqa: S307 - fixed dotted path


@pytest.mark.parametrize("path", ["optim.toy", "loss.", "a-b", "loss.x.y"])
def test_section_paths_outside_the_two_parents_are_refused(path):
    with pytest.raises(ValueError, match="expected 'NAME' or 'loss.NAME'"):
        section(path)


TOY = """
from dataclasses import dataclass

from . import section


@section("loss.toy", rank=5)
@dataclass
class ToyLossConfig:
    tau: float = 0.1
    steps: int = 3

    def check(self):
        return [("tau", "must be > 0")] if self.tau <= 0 else []
"""


def test_adding_a_section_module_is_all_a_new_method_needs(tmp_path):
    """A copy of segproto.config with one module added to its sections package (and no other
    edit) loads, overrides, checks and saves the new section, with did-you-mean hints."""
    pkg = tmp_path / "cfgcopy"
    shutil.copytree(Path(segproto.config.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "sections" / "toy.py").write_text(TOY)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("method: {name: ce}\nloss:\n  toy:\n    tau: 0.5\n")
    code = textwrap.dedent(f"""
        import dataclasses, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from cfgcopy import ConfigError, load_config, save_config
        c = load_config({str(cfg)!r}, ["loss.toy.steps=7"])
        print([f.name for f in dataclasses.fields(c.loss)])
        print(c.loss.toy.tau, c.loss.toy.steps)
        save_config(c, {str(tmp_path / 'saved.yaml')!r})
        print(load_config({str(tmp_path / 'saved.yaml')!r}) == c)
        for bad in (["loss.toy.tua=1"], ["loss.toy.tau=-1"]):
            try:
                load_config({str(cfg)!r}, bad)
            except ConfigError as e:
                print("ERR", str(e).replace("\\n", " "))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "['ce', 'toy', 'contrast', 'hiposeg', 'prcl']"
    assert lines[1] == "0.5 7"
    assert lines[2] == "True"
    assert "loss.toy.tua" in lines[3] and "did you mean 'loss.toy.tau'" in lines[3]
    assert "loss.toy.tau" in lines[4] and "must be > 0" in lines[4]
