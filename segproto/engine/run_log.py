"""The plain-text log of a run (``work_dir/train.log``) and the work-dir claim of a fresh run.

:class:`RunLog` receives every line the trainer and the methods print through
:func:`segproto.utils.log.echo` and every Python warning, keeps them until the work dir exists
(a failed start leaves the work dir as it was), then writes them to ``train.log``: truncated by a
fresh run, appended to by ``--resume``. The progress bar goes to the terminal only, so the file
holds no carriage-return fragments.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

from segproto.utils import dist as sdist
from segproto.utils.checkpoint import remove_stale_temps, run_files
from segproto.utils.log import add_sink, echo, remove_sink

__all__ = ["RunLog", "WorkDirError", "claim_work_dir", "default_work_dir", "LOG_NAME"]

LOG_NAME = "train.log"


class WorkDirError(ValueError):
    """A fresh run was pointed at a work dir that holds another run's outputs."""


class RunLog:
    """Collects the run's lines (``active`` is False on ranks other than 0: nothing is kept)."""

    def __init__(self, active: bool = True) -> None:
        self.active = active          # collecting lines (False once closed, or after a write error)
        self._registered = active     # the echo sink and the warnings hook are installed
        self._pending: list[str] = []
        self._file = None
        self._showwarning = None
        if active:
            add_sink(self.write)
            self._showwarning = warnings.showwarning
            warnings.showwarning = self._warning

    def _warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        self._showwarning(message, category, filename, lineno, file, line)
        self.write(warnings.formatwarning(message, category, filename, lineno, line).rstrip())

    def write(self, msg: str) -> None:
        """One message (several lines allowed); carriage returns are dropped."""
        if not self.active:
            return
        text = str(msg).replace("\r", "")
        if self._file is None:
            self._pending.append(text)
            return
        try:
            self._file.write(text + "\n")
            self._file.flush()
        except OSError:  # a full disk: the log stops, the run goes on (the console has every line)
            self._drop_file()

    def _drop_file(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass
        self._file, self.active = None, False

    def start(self, path: Path, append: bool) -> None:
        """Opens ``path`` (appending when ``append``) and writes the lines kept so far."""
        if not self.active or self._file is not None:
            return
        try:
            self._file = open(path, "a" if append else "w", encoding="utf-8")
            self._file.write("".join(text + "\n" for text in self._pending))
            self._file.flush()
        except OSError:
            if self._file is not None:
                self._drop_file()
            self.active = False
        self._pending.clear()

    def close(self) -> None:
        """Stops collecting; the file is closed (lines kept before :meth:`start` are dropped)."""
        if not self._registered:
            return
        self._registered = False
        remove_sink(self.write)
        if self._showwarning is not None and warnings.showwarning == self._warning:
            warnings.showwarning = self._showwarning
        if self._file is not None:
            self._drop_file()
        self._file, self._pending, self.active = None, [], False


def claim_work_dir(work_dir: Path, force: bool, main: bool) -> None:
    """A fresh run never replaces another run's outputs silently: it stops, or (``force``)
    removes them first."""
    old = run_files(work_dir)
    if not old:
        return
    if not force:
        shown = ", ".join(p.name for p in old[:4]) + (f" and {len(old) - 4} more" if len(old) > 4 else "")
        raise WorkDirError(f"work dir {work_dir} holds another run ({shown}); continue it with --resume, "
                           "replace it with --force, or choose another --work-dir")
    sdist.barrier()
    if main:
        for p in old:
            p.unlink(missing_ok=True)
        remove_stale_temps(work_dir)
        echo(f"--force: removed {len(old)} file(s) of an earlier run from {work_dir}")
    sdist.barrier()


def default_work_dir(config: str, cwd: Optional[Path] = None) -> str:
    """``work_dirs/<config path without a leading configs/ and without its suffix>``, so two
    configs never share one (``configs/pico/quickstart.yaml`` -> ``work_dirs/pico/quickstart``).
    A config outside the current directory gives ``work_dirs/<file name without suffix>``."""
    path = Path(config)
    base = (cwd or Path.cwd()).resolve()
    try:
        rel = path.resolve().relative_to(base)
    except ValueError:
        rel = Path(path.name)
    parts = list(rel.with_suffix("").parts)
    if len(parts) > 1 and parts[0] == "configs":
        parts = parts[1:]
    return str(Path("work_dirs", *parts))
