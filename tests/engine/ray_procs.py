"""Ray processes of one test: a private Ray temp dir, and a check that no process of it is left.

Every Ray process (GCS, raylet, workers, agents) names its temp directory on its command line or
inherits ``RAY_TMPDIR`` in its environment (actors rename their command line), so the processes
of a test's Ray are found by that directory, and other Ray clusters on the machine are never
looked at.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator


def processes_using(path: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the live processes whose command line or environment contains ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (entry / "environ").read_bytes().decode(errors="replace")
            status = (entry / "status").read_text().splitlines()
            state = next((line for line in status if line.startswith("State:")), "")
        except OSError:
            continue
        if (path in cmd or path in env) and "zombie" not in state:
            found.append((int(entry.name), cmd[:200]))
    return found


@contextlib.contextmanager
def private_ray_tmp(grace_s: float = 60.0) -> Iterator[str]:
    """A short temp dir for ``RAY_TMPDIR`` (Unix socket paths must stay short); on exit, waits up
    to ``grace_s`` for the Ray processes using it to end and fails if any is left."""
    root = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    try:
        yield root
    finally:
        deadline = time.monotonic() + grace_s
        while processes_using(root) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = processes_using(root)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"
