"""Atomic checkpoints: temp file + fsync + rename, a keep limit, a best-mIoU copy, and
``last_checkpoint``. A crash at any moment leaves the previous checkpoints intact; the temp file
of a process killed mid-write (``.NAME.tmp-PID``) is removed by the next save in that folder.
A save that fails (a full disk, a write error) raises :class:`CheckpointError` naming the file and
the checkpoint that is still the latest. Files load with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any, Optional

import torch

_ITER_RE = re.compile(r"^iter_(\d+)\.pth$")
_BEST_RE = re.compile(r"^best_mIoU_iter_(\d+)\.pth$")
_TMP_RE = re.compile(r"^\..+\.tmp-(\d+)$")
#: The files a training run writes in its work dir (what a fresh run refuses to replace).
RUN_FILES = ("last_checkpoint", "scalars.jsonl", "metrics.json")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or not a segproto checkpoint."""


class CheckpointSaveError(CheckpointError, OSError):
    """A checkpoint could not be written (no space, a write error); the previous one is intact."""


class _Recorder:
    """A file whose write errors are kept: ``torch.save`` turns an ``OSError`` of the file (a full
    disk) into a ``RuntimeError`` about stream positions; the original is raised instead."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            rec = _Recorder(f)
            try:
                write(rec)
            except Exception as exc:
                if rec.error is not None and rec.error is not exc:
                    raise rec.error from exc
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    _atomic_write(path, lambda f: torch.save(obj, f))
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Removes the temp files (``.NAME.tmp-PID``) that a killed process left in ``folder``: those
    whose process is gone, or is this one (a temp of this process outlives no write)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP_RE.match(p.name)
        if m and p.is_file() and (int(m.group(1)) == os.getpid() or not _pid_alive(int(m.group(1)))):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:  # removed by another process meanwhile
                pass
    return removed


def run_files(work_dir: str | Path) -> list[Path]:
    """The training outputs in ``work_dir`` (checkpoints, ``last_checkpoint``, scalars, metrics)."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    return sorted(p for p in work_dir.iterdir()
                  if p.name in RUN_FILES or _ITER_RE.match(p.name) or _BEST_RE.match(p.name))


def save_checkpoint(state: dict, work_dir: str | Path, iteration: int, max_keep: int,
                    best: bool) -> Path:
    """Writes ``iter_N.pth`` (and ``best_mIoU_iter_N.pth`` if ``best``), updates
    ``last_checkpoint``, then prunes old files beyond ``max_keep`` (-1 keeps all)."""
    work_dir = Path(work_dir)
    remove_stale_temps(work_dir)
    path = work_dir / f"iter_{iteration}.pth"
    try:
        atomic_torch_save(state, path)
        if best:
            best_path = atomic_torch_save(state, work_dir / f"best_mIoU_iter_{iteration}.pth")
            for old in work_dir.iterdir():
                if _BEST_RE.match(old.name) and old != best_path:
                    old.unlink()
        save_marker(work_dir, path)
    except OSError as exc:
        last = find_last_checkpoint(work_dir)
        reason = "no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
        keep = f"the latest checkpoint is still {last}" if last is not None and last != path else "no checkpoint was kept"
        raise CheckpointSaveError(f"cannot save checkpoint {path}: {reason}; {keep} (last_checkpoint unchanged)") from exc
    if max_keep > 0:
        ckpts = sorted((int(m.group(1)), p) for p in work_dir.iterdir() if (m := _ITER_RE.match(p.name)))
        for _, old in ckpts[:-max_keep]:
            old.unlink()
    return path


def save_marker(work_dir: str | Path, path: str | Path) -> None:
    """Points ``work_dir/last_checkpoint`` at ``path`` (atomically)."""
    _atomic_write(Path(work_dir) / "last_checkpoint", lambda f: f.write(Path(path).name.encode()))


def find_last_checkpoint(work_dir: str | Path) -> Optional[Path]:
    """The checkpoint named in ``last_checkpoint``, else the highest ``iter_N.pth``, else None."""
    work_dir = Path(work_dir)
    marker = work_dir / "last_checkpoint"
    if marker.is_file():
        path = work_dir / marker.read_text().strip()
        if path.is_file():
            return path
    ckpts = sorted((int(m.group(1)), p) for p in work_dir.glob("iter_*.pth") if (m := _ITER_RE.match(p.name)))
    return ckpts[-1][1] if ckpts else None


def read_state(path: str | Path) -> object:
    """``torch.load(weights_only=True)`` on CPU, with clear errors for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (0 bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, ...
        why = " ".join(str(exc).split()) or type(exc).__name__
        if why.startswith("Weights only load failed"):  # torch's advice to unpickle unsafely does not apply
            detail = why.partition("from a trusted source.")[2].partition(" Check the documentation")[0]
            detail = detail.rpartition("WeightsUnpickler error:")[2].strip()
            why = "not a file of tensors that loads without running pickled code" + (f" ({detail[:150]})"
                                                                                     if detail else "")
        raise CheckpointError(f"cannot read checkpoint {path}: {why[:300]}") from exc


def load_checkpoint(path: str | Path) -> dict:
    """Loads a training checkpoint (see :func:`read_state`); it must hold a 'model' entry."""
    state = read_state(path)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a segproto checkpoint (no 'model' entry)")
    return state
