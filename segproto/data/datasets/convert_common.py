"""Helpers shared by the annotation converters (:mod:`.convert`, :mod:`.convert_voc`,
:mod:`.pascal_part_convert`): the optional scipy check, the (optionally parallel) job loop, list and
index-PNG writers, and the label-range check that names the file and the bad values.

Every converter output goes through :func:`write_file` (or :func:`link_to`): a file that is already
there with the same content is left as it is (a rerun is a no-op). One with other content is
replaced when the converter functions are called from Python (the caller named the destination);
the command line (``python -m segproto.tools.convert``) calls ``allow_replace(False)`` first, so
there such a file is refused, naming it, unless ``--force``."""

from __future__ import annotations

import importlib.util
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from ..pipeline.dataset import DatasetError

__all__ = ["need_scipy", "run_jobs", "write_list", "save_index_png", "checked_labels", "write_file", "link_to",
           "allow_replace"]

_REPLACE = True  # module state, so the converters' worker processes (forked) inherit it


def allow_replace(flag: bool = True) -> None:
    """Whether :func:`write_file` and :func:`link_to` replace files with other content."""
    global _REPLACE
    _REPLACE = bool(flag)


def _refuse(path: Path, what: str) -> None:
    raise FileExistsError(f"{path} already exists with {what}; pass --force to replace it")


def write_file(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (parents made); see the module doc for existing files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            return
        if not _REPLACE:
            _refuse(path, "other content")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def link_to(link: Path, target: Path, directory: bool = False) -> None:
    """Makes ``link`` a symlink to ``target`` (resolved); an existing link to it is kept, anything
    else at ``link`` is refused unless replacing is allowed."""
    target = target.resolve()
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() == target:
        return
    if link.is_symlink() or link.exists():
        if not _REPLACE or (link.is_dir() and not link.is_symlink()):
            _refuse(link, "other content" if not link.is_dir() else "a folder in its place")
        link.unlink()
    link.symlink_to(target, target_is_directory=directory)


def need_scipy(what: str) -> None:
    if importlib.util.find_spec("scipy") is None:  # pragma: no cover - scipy is optional (installed in the dev venv)
        raise ImportError(f"{what} needs scipy (scipy.io.loadmat) to read MATLAB .mat files: pip install scipy")


def run_jobs(fn: Callable[[Path], None], jobs: Sequence[Path], num_workers: int) -> int:
    if num_workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(num_workers) as pool:
            list(pool.map(fn, jobs, chunksize=64))
    else:
        for job in jobs:
            fn(job)
    return len(jobs)


def write_list(path: Path, names: Iterable[str], head: str = "") -> None:
    """A text file of one name per line (after ``head``)."""
    write_file(path, (head + "".join(f"{n}\n" for n in names)).encode())


def save_index_png(arr: np.ndarray, path: Path) -> None:
    """A single-channel 8-bit PNG of ``arr``."""
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), "L").save(buf, format="PNG")
    write_file(path, buf.getvalue())


def checked_labels(raw: np.ndarray, valid: np.ndarray, path: Path, what: str) -> np.ndarray:
    bad = (raw < 0) | (raw >= len(valid))
    if not bad.any():
        bad = ~valid[raw]
    if bad.any():
        raise DatasetError(f"{path}: values {np.unique(raw[bad])[:10].tolist()} are not {what} "
                           f"({int(bad.sum())} pixels)")
    return raw
