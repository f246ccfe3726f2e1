"""A file that is not a safe checkpoint is named with the reason, never with torch's advice to
load it unsafely, and nothing pickled in it runs."""

import os

import pytest
import torch

from segproto.engine import CheckpointError
from segproto.utils.checkpoint import read_state


class _Runs:
    def __reduce__(self):
        return (os.system, ("touch RAN",))


def test_a_pickle_that_would_run_code_is_named_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": _Runs()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as err:
        read_state(tmp_path / "evil.pth")
    msg = str(err.value)
    assert msg.startswith(f"cannot read checkpoint {tmp_path / 'evil.pth'}: not a file of tensors")
    assert "GLOBAL posix.system" in msg and "weights_only" not in msg and "\n" not in msg
    assert not (tmp_path / "RAN").exists()


def test_a_text_file_is_named_with_the_reason(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("# not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes.pth: not a file of tensors .*\(Unsupported operand 35\)$"):
        read_state(path)
