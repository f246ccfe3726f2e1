"""python -m segproto.tools.complexity: bad inputs end in one line, exit status 1, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args, named", [
    (["{T}/missing.pth"], "model not found: {T}/missing.pth"),
    (["configs/quickstart.yaml", "--json", "README.md"], "--json README.md: the file exists; add --force"),
    (["configs/quickstart.yaml", "--json", "README.md/m.json"], "--json README.md/m.json: cannot create the folder"),
], ids=["missing_model", "existing_json", "json_under_a_file"])
def test_one_line_errors(tmp_path, args, named):
    args = [a.replace("{T}", str(tmp_path)) for a in args]
    out = subprocess.run([sys.executable, "-m", "segproto.tools.complexity", *args, "--size", "32", "32"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    err = out.stderr.strip().splitlines()
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(err) == 1 and err[0].startswith("error: ") and named.replace("{T}", str(tmp_path)) in err[0]
