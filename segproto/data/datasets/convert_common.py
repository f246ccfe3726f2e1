"""Helpers shared by the annotation converters (:mod:`.convert`, :mod:`.convert_voc`,
:mod:`.pascal_part_convert`): the optional scipy check, the (optionally parallel) job loop, list and
index-PNG writers, and the label-range check that names the file and the bad values."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from ..pipeline.dataset import DatasetError

__all__ = ["need_scipy", "run_jobs", "write_list", "save_index_png", "checked_labels"]


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


def write_list(path: Path, names: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))


def save_index_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), "L").save(path)


def checked_labels(raw: np.ndarray, valid: np.ndarray, path: Path, what: str) -> np.ndarray:
    bad = (raw < 0) | (raw >= len(valid))
    if not bad.any():
        bad = ~valid[raw]
    if bad.any():
        raise DatasetError(f"{path}: values {np.unique(raw[bad])[:10].tolist()} are not {what} "
                           f"({int(bad.sum())} pixels)")
    return raw
