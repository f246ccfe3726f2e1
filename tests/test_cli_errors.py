"""Bad inputs to the entry points other than training (``segproto.test``, ``segproto.infer``,
``segproto.export``, ``segproto.tools.embeddings``, ``segproto.tools.convert``, ``search/sweep.py``):
each ends in one stderr line naming the file, key or value, exit status 1 or 2, and no traceback
(``--debug`` shows it). One subprocess per case; the bulk is in the slow tier."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.engine.conftest import REPO, tiny_cfg_dict, tiny_root  # noqa: F401  (tiny_root: fixture)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
T, I, E = ["-m", "segproto.test"], ["-m", "segproto.infer"], ["-m", "segproto.export"]
M, C, S = ["-m", "segproto.tools.embeddings"], ["-m", "segproto.tools.convert"], ["search/sweep.py"]
NO_ROOT = ["--cfg-options", "data.dataset=cityscapes", "data.root={A}/no_root"]
slow = pytest.mark.slow


def _sweep(cfg: str, *options: str, wd: str = "{NEW}/sweep") -> list[str]:
    return S + [cfg, "--space", "{A}/space.yaml", "--num-samples", "1", "--work-dir", wd, *options]


# (argv with placeholders, exit status, text the one stderr line holds); {NEW}: a fresh folder per case
CASES = {
    "test/missing_config": (T + ["{A}/none.yaml", "{CK}"], 2, "{A}/none.yaml"),
    "test/folder_as_config": (T + ["{A}", "{CK}"], 2, "Is a directory"),
    "test/malformed_yaml": (T + ["{A}/malformed.yaml", "{CK}"], 2, "{A}/malformed.yaml: invalid YAML"),
    "test/unknown_key": (T + ["{CFG}", "{CK}", "--cfg-options", "train.itrs=3"], 2, "did you mean 'train.iters'"),
    "test/bad_value": (T + ["{CFG}", "{CK}", "--cfg-options", "train.iters=abc"], 2, "expects int, got 'abc'"),
    "test/missing_checkpoint": (T + ["{CFG}", "{A}/none.pth"], 1, "checkpoint not found: {A}/none.pth"),
    "test/truncated_checkpoint": (T + ["{CFG}", "{A}/cut.pth"], 1, "cannot read checkpoint {A}/cut.pth"),
    "test/garbage_checkpoint": (T + ["{CFG}", "{A}/garbage.pth"], 1, "cannot read checkpoint {A}/garbage.pth"),
    "test/other_method": (T + ["{CFG}", "{PICO}"], 1, "{PICO}: trained with method 'pico', 22 classes"),
    "test/other_classes": (T + ["{CFG}", "{COARSE}"], 1, "trained with method 'ce', 7 classes, fcn/resnet18; "
                                                         "this config has method 'ce', 22 classes"),
    "test/missing_dataset_root": (T + ["{CFG}", "{CK}", *NO_ROOT], 1, "{A}/no_root"),
    "test/out_under_a_file": (T + ["{CFG}", "{CK}", "--out", "{CFG}/m.json"], 1, "--out {CFG}/m.json: cannot create"),
    "test/out_exists": (T + ["{CFG}", "{CK}", "--out", "{A}/taken.json"], 1, "--out {A}/taken.json: the file exists; "
                                                                            "add --force"),
    "infer/missing_model": (I + ["{A}/none.pth", "{IMG}", "--out", "{NEW}"], 1, "model not found: {A}/none.pth"),
    "infer/garbage_model": (I + ["{A}/garbage.pth", "{IMG}", "--out", "{NEW}"], 1, "{A}/garbage.pth"),
    "infer/malformed_yaml": (I + ["{A}/malformed.yaml", "{CK}", "{IMG}", "--out", "{NEW}"], 2, "invalid YAML"),
    "infer/config_of_other_method": (I + ["{CFG}", "{PICO}", "{IMG}", "--out", "{NEW}"], 1,
                                     "{PICO}: trained with method 'pico'"),
    "infer/missing_image": (I + ["{CK}", "{A}/none.png", "--out", "{NEW}"], 1, "image not found: {A}/none.png"),
    "infer/not_an_image": (I + ["{CK}", "{A}/text.png", "--out", "{NEW}"], 1, "{A}/text.png: cannot read image"),
    "infer/out_under_a_file": (I + ["{CK}", "{IMG}", "--out", "{CFG}/pred"], 1, "--out {CFG}/pred: cannot create"),
    "infer/outputs_exist": (I + ["{CK}", "{IMG}", "--out", "{A}/done"], 1, "{A}/done/img_pred.png exists"),
    "export/missing_checkpoint": (E + ["{A}/none.pth", "{NEW}/m.pth"], 1, "model not found: {A}/none.pth"),
    "export/truncated_checkpoint": (E + ["{A}/cut.pth", "{NEW}/m.pth"], 1, "cannot read checkpoint {A}/cut.pth"),
    "export/unknown_key": (E + ["{CFG}", "{CK}", "{NEW}/m.pth", "--cfg-options", "model.chanels=8"], 2,
                           "unknown key 'model.chanels'"),
    "export/config_of_other_method": (E + ["{CFG}", "{PICO}", "{NEW}/m.pth"], 1, "{PICO}: trained with method 'pico'"),
    "export/out_under_a_file": (E + ["{CK}", "{CFG}/m.pth"], 1, "OUT {CFG}/m.pth: cannot create the folder"),
    "export/out_exists": (E + ["{CK}", "{A}/taken.json"], 1, "OUT {A}/taken.json: the file exists; add --force"),
    "export/out_is_the_checkpoint": (E + ["{CK}", "{CK}", "--force"], 1, "OUT {CK} is the checkpoint itself"),
    "embeddings/missing_config": (M + ["{A}/none.yaml", "{CK}", "--out", "{NEW}/e.png"], 2, "{A}/none.yaml"),
    "embeddings/bad_value": (M + ["{CFG}", "{CK}", "--out", "{NEW}/e.png", "--cfg-options", "data.level=x"], 2,
                             "'data.level'"),
    "embeddings/missing_checkpoint": (M + ["{CFG}", "{A}/none.pth", "--out", "{NEW}/e.png"], 1, "{A}/none.pth"),
    "embeddings/other_method": (M + ["{CFG}", "{PICO}", "--out", "{NEW}/e.png"], 1, "{PICO}: trained with method "
                                                                                   "'pico'"),
    "embeddings/other_classes": (M + ["{CFG}", "{COARSE}", "--out", "{NEW}/e.png"], 1, "7 classes"),
    "embeddings/missing_dataset_root": (M + ["{CFG}", "{CK}", "--out", "{NEW}/e.png", *NO_ROOT], 1, "{A}/no_root"),
    "embeddings/out_under_a_file": (M + ["{CFG}", "{CK}", "--out", "{CFG}/e.png"], 1, "--out {CFG}/e.png"),
    "embeddings/out_exists": (M + ["{CFG}", "{CK}", "--out", "{A}/taken.png"], 1, "--out {A}/taken.png: the file "
                                                                                 "exists"),
    "convert/missing_source": (C + ["cityscapes", "{A}/no_src", "{NEW}"], 1, "SRC not found: {A}/no_src"),
    "convert/not_a_cityscapes_root": (C + ["cityscapes", "{A}", "{NEW}"], 1, "{A}/gtFine"),
    "convert/unknown_dataset": (C + ["cityscape", "{A}", "{NEW}"], 2, "did you mean 'cityscapes'"),
    "convert/unwritable_destination": (C + ["cityscapes", "{A}/cs", "{CFG}/out"], 1, "{CFG}"),
    "sweep/malformed_yaml": (_sweep("{A}/malformed.yaml"), 2, "{A}/malformed.yaml: invalid YAML"),
    "sweep/unknown_key": (_sweep("{CFG}", "--cfg-options", "train.itrs=3"), 2, "unknown key 'train.itrs'"),
    "sweep/malformed_space": (S + ["{CFG}", "--space", "{A}/malformed.yaml", "--num-samples", "1", "--work-dir",
                                   "{NEW}/sweep"], 2, "{A}/malformed.yaml: invalid YAML"),
    "sweep/missing_dataset_root": (_sweep("{CFG}", *NO_ROOT), 2, "{A}/no_root"),
    "sweep/work_dir_under_a_file": (_sweep("{CFG}", wd="{CFG}/sweep"), 2, "--work-dir {CFG}/sweep: cannot create"),
}
FAST = {"test/other_method", "test/out_exists", "infer/config_of_other_method",
        "embeddings/other_classes", "convert/unwritable_destination", "sweep/malformed_yaml"}


@pytest.fixture(scope="module")
def inputs(tiny_root, tmp_path_factory):  # noqa: F811
    """Placeholders -> paths: a config, checkpoints of it, of PiCo and of 7 (coarse) classes, bad files."""
    from segproto.config import load_config
    from segproto.engine import Trainer

    a = tmp_path_factory.mktemp("cli_errors")
    cfg = a / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_cfg_dict(tiny_root, iters=1, eval_interval=1, checkpoint_interval=1)))
    runs = {"CK": [], "PICO": ["method.name=pico"], "COARSE": ["data.taxonomy=taxonomy.yaml", "data.level=1"]}
    paths = {"A": str(a), "CFG": str(cfg)}
    for key, overrides in runs.items():
        Trainer(load_config(cfg, overrides), a / key.lower()).run()
        paths[key] = str(a / key.lower() / "iter_1.pth")
    data = Path(paths["CK"]).read_bytes()
    (a / "cut.pth").write_bytes(data[: len(data) // 3])
    (a / "garbage.pth").write_bytes(bytes(range(256)) * 20)
    (a / "malformed.yaml").write_text("data:\n  root: [unclosed\n")
    (a / "space.yaml").write_text("optim.lr:\n  loguniform: [0.005, 0.05]\n")
    (a / "text.png").write_text("not an image\n")
    img = next((tiny_root / "img_dir" / "val").iterdir())
    paths["IMG"] = str(a / "img.png")
    (a / "img.png").write_bytes(img.read_bytes())
    for name in ("taken.json", "taken.png"):
        (a / name).write_text("{}")
    (a / "done").mkdir()
    (a / "done" / "img_pred.png").write_bytes(b"")
    (a / "cs" / "gtFine" / "val" / "x").mkdir(parents=True)
    from PIL import Image

    Image.new("L", (4, 4), 7).save(a / "cs" / "gtFine" / "val" / "x" / "x_0_0_gtFine_labelIds.png")
    return paths


def _run(argv: list[str], paths: dict, new: Path) -> subprocess.CompletedProcess:
    fill = {**paths, "NEW": str(new)}
    return subprocess.run([sys.executable, *(s.format(**fill) for s in argv)], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if c in FAST else slow) for c in CASES])
def test_a_bad_input_ends_in_one_line(inputs, case, tmp_path):
    argv, code, needle = CASES[case]
    out = _run(argv, inputs, tmp_path / "new")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, (case, out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr and len(lines) == 1, (case, out.stderr[-3000:])
    assert lines[0].startswith("error: ") and needle.format(**inputs) in lines[0], (case, lines)
    assert not (tmp_path / "new" / "m.pth").exists()  # nothing written


def test_debug_shows_the_traceback(inputs, tmp_path):
    out = _run(T + ["{CFG}", "{PICO}", "--debug"], inputs, tmp_path)
    assert out.returncode == 1 and "Traceback" in out.stderr and "CheckpointError" in out.stderr
