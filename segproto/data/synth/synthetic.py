"""The built-in procedurally generated hierarchical street-scene benchmark.

:func:`generate_synthetic` writes the dataset once, in the standard folder layout read by
:class:`segproto.data.SegDataset`::

    root/img_dir/{train,val,test}/<name>.png   RGB
    root/ann_dir/{train,val,test}/<name>.png   uint8 fine-class ids, 255 = ignore
    root/splits/{train,val,test}.txt           one name per line
    root/splits/train_{labeled,unlabeled}_1-{16,8,4,2}.txt   nested semi-supervised splits
    root/folds.yaml                            4 few-shot folds of the fine classes
    root/taxonomy.yaml, root/taxonomy_3level.yaml
    root/meta.json                             written last: version, params, classes, stats

Image ``i`` of split ``p`` is rendered from its own generator seeded with
``(seed, p, i)``, so the bytes do not depend on generation order or worker count.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .classes import (COARSE, FINE_NAMES, IGNORE_INDEX, NUM_FINE, PALETTE,
                            build_taxonomy)
from .scene import render_scene

__all__ = ["generate_synthetic", "render_sample", "sample_name", "GENERATOR_VERSION",
           "SPLITS", "SEMI_FRACTIONS", "NUM_FOLDS"]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
SEMI_FRACTIONS = (16, 8, 4, 2)
NUM_FOLDS = 4
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_OUTPUTS = ("img_dir", "ann_dir", "splits", "folds.yaml", "taxonomy.yaml",
            "taxonomy_3level.yaml", "meta.json")
_MARKER = ".generating"
_LOCK = ".lock"


def sample_name(split: str, index: int) -> str:
    """File stem of image ``index`` of ``split``, e.g. ``train_000042``."""
    return f"{split}_{index:06d}"


def render_sample(seed: int, split: str, index: int, image_size: int = 128
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Renders one image from its own generator seeded by ``(seed, split, index)``.

    Returns:
        ``(image uint8 [S, S, 3], label uint8 [S, S])``.
    """
    rng = np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])
    return render_scene(rng, image_size)


def _render_chunk(args: tuple[str, int, str, list[int], int]) -> np.ndarray:
    """Renders and writes a list of images; returns ``int64 [2, 256]`` stats.

    Row 0 counts pixels per label value, row 1 the images containing each value.
    """
    root, seed, split, indices, size = args
    stats = np.zeros((2, 256), np.int64)
    img_dir, ann_dir = Path(root, "img_dir", split), Path(root, "ann_dir", split)
    for i in indices:
        img, lab = render_sample(seed, split, i, size)
        name = sample_name(split, i)
        Image.fromarray(img, "RGB").save(img_dir / f"{name}.png", format="PNG")
        Image.fromarray(lab, "L").save(ann_dir / f"{name}.png", format="PNG")
        counts = np.bincount(lab.ravel(), minlength=256)
        stats[0] += counts
        stats[1] += counts > 0
    return stats


def _params(num_train: int, num_val: int, num_test: int, image_size: int, seed: int
            ) -> dict[str, int]:
    for key, val in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if not isinstance(val, int) or val < 0:
            raise ValueError(f"{key} must be a non-negative int, got {val!r}")
    if num_train < 1:
        raise ValueError("num_train must be at least 1")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
    return {"version": GENERATOR_VERSION, "num_train": num_train, "num_val": num_val,
            "num_test": num_test, "image_size": image_size, "seed": int(seed)}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_splits(root: Path, counts: dict[str, int], seed: int) -> None:
    sdir = root / "splits"
    sdir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        names = [sample_name(split, i) for i in range(counts[split])]
        _write_text(sdir / f"{split}.txt", "".join(n + "\n" for n in names))
    n = counts["train"]
    perm = np.random.default_rng([int(seed), 1000]).permutation(n)
    for k in SEMI_FRACTIONS:  # nested: 1-16 is a subset of 1-8, ...
        labeled = set(perm[: math.ceil(n / k)].tolist())
        lab = [sample_name("train", i) for i in range(n) if i in labeled]
        unl = [sample_name("train", i) for i in range(n) if i not in labeled]
        _write_text(sdir / f"train_labeled_1-{k}.txt", "".join(x + "\n" for x in lab))
        _write_text(sdir / f"train_unlabeled_1-{k}.txt", "".join(x + "\n" for x in unl))


def _write_folds(root: Path) -> None:
    lines = ["# Few-shot class folds of the fine classes (label ids): train on three folds,",
             "# test on the held-out one. Fold f holds the classes c with c % 4 == f.",
             f"num_folds: {NUM_FOLDS}", "folds:"]
    for f in range(NUM_FOLDS):
        ids = [c for c in range(NUM_FINE) if c % NUM_FOLDS == f]
        names = ", ".join(FINE_NAMES[c] for c in ids)
        lines.append(f"  - [{', '.join(map(str, ids))}]  # {names}")
    _write_text(root / "folds.yaml", "\n".join(lines) + "\n")


def _clean(root: Path) -> None:
    """Removes this generator's outputs (never anything else) under ``root``."""
    meta = root / "meta.json"
    if meta.exists():
        meta.unlink()  # first, so an interruption below is detected next time
    for name in _OUTPUTS:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire_lock(root: Path, timeout: float = 3600.0) -> None:
    """Creates ``root/.lock`` (with our pid), waiting while a live process holds it."""
    lock = root / _LOCK
    start = time.monotonic()
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and not _pid_alive(pid):
                lock.unlink(missing_ok=True)  # stale lock of a dead process
                continue
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{lock} held by process {pid} for over {timeout:.0f} s")
            time.sleep(0.2)


def _meta_params(root: Path) -> dict | None:
    try:
        return json.loads((root / "meta.json").read_text()).get("params")
    except (OSError, ValueError, AttributeError):
        return None


def _check_existing(root: Path, params: dict, overwrite: bool) -> bool:
    """Returns True if ``root`` already holds this dataset; cleans it if it must be redone."""
    meta_path = root / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text()).get("params", {})
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{meta_path}: unreadable ({exc}); delete it or pass "
                             "overwrite=True") from exc
        if old == params:
            return True
        if not overwrite:
            diff = ", ".join(f"{k}: existing {old.get(k)!r} != requested {params.get(k)!r}"
                             for k in sorted(set(old) | set(params))
                             if old.get(k) != params.get(k))
            raise FileExistsError(f"{meta_path} was generated with different parameters "
                                  f"({diff}); pass overwrite=True to regenerate or use "
                                  "another root")
        log.info("regenerating %s (parameters changed)", root)
    elif (root / _MARKER).exists():
        log.warning("%s: previous generation was interrupted; regenerating", root)
    elif any(p.name not in (_LOCK,) for p in root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root} is not empty and has no meta.json, so it is not a "
                              "generated synthetic dataset; use an empty or new root, or "
                              "pass overwrite=True (removes img_dir, ann_dir, splits, "
                              "*.yaml and meta.json there)")
    _clean(root)
    return False


def generate_synthetic(root: str | Path, *, num_train: int = 2000, num_val: int = 300,
                       num_test: int = 300, image_size: int = 128, seed: int = 0,
                       overwrite: bool = False, num_workers: int = 0) -> Path:
    """Generates the synthetic benchmark under ``root`` once, or reuses it.

    Args:
        root: Dataset directory (created if missing).
        num_train, num_val, num_test: Images per split.
        image_size: Height and width ``S`` of every image.
        seed: Dataset seed; same parameters give byte-identical files.
        overwrite: Regenerate if ``root/meta.json`` holds different parameters (or the
            directory holds foreign files); otherwise that raises ``FileExistsError``.
        num_workers: Processes used to render (0 = this process). Does not change bytes.

    Returns:
        ``root`` as an absolute :class:`Path`.
    """
    root = Path(root).expanduser().absolute()
    params = _params(num_train, num_val, num_test, image_size, seed)
    root.mkdir(parents=True, exist_ok=True)
    if _meta_params(root) == params:
        return root  # fast path, no lock needed
    _acquire_lock(root)
    try:
        if _check_existing(root, params, overwrite):
            return root  # another process generated it while we waited
        _write_text(root / _MARKER, json.dumps(params))
        t0 = time.perf_counter()
        counts = {"train": num_train, "val": num_val, "test": num_test}
        stats = _render_all(root, params, counts, num_workers)
        _write_splits(root, counts, seed)
        _write_folds(root)
        build_taxonomy(2).to_yaml(root / "taxonomy.yaml")
        build_taxonomy(3).to_yaml(root / "taxonomy_3level.yaml")
        meta = _meta(params, counts, stats)
        _write_text(root / "meta.json", json.dumps(meta, indent=1))
        (root / _MARKER).unlink()
        log.info("generated %s in %.1f s", root, time.perf_counter() - t0)
        return root
    finally:
        (root / _LOCK).unlink(missing_ok=True)


def _render_all(root: Path, params: dict, counts: dict[str, int], num_workers: int
                ) -> dict[str, np.ndarray]:
    jobs = []
    for split in SPLITS:
        for sub in ("img_dir", "ann_dir"):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
        idx = list(range(counts[split]))
        step = 64
        jobs += [(str(root), params["seed"], split, idx[a:a + step], params["image_size"])
                 for a in range(0, len(idx), step)]
    if num_workers > 0:
        with ProcessPoolExecutor(num_workers, mp_context=get_context("spawn")) as ex:
            results = list(ex.map(_render_chunk, jobs))
    else:
        results = [_render_chunk(j) for j in jobs]
    stats = {s: np.zeros((2, 256), np.int64) for s in SPLITS}
    for job, res in zip(jobs, results):
        stats[job[2]] += res
    return stats


def _meta(params: dict, counts: dict[str, int], stats: dict[str, np.ndarray]
          ) -> dict[str, Any]:
    tax = build_taxonomy(2)
    return {
        "generator": "segproto.data.synthetic",
        "params": params,
        "classes": list(FINE_NAMES),
        "palette": [list(c) for c in PALETTE],
        "coarse_classes": list(COARSE),
        "fine_to_coarse": tax.parent_map(0, 1).tolist(),
        "ignore_index": IGNORE_INDEX,
        "num_images": counts,
        "img_suffix": ".png",
        "seg_map_suffix": ".png",
        "stats": {s: {"pixels": st[0, :NUM_FINE].tolist(),
                      "ignore_pixels": int(st[0, IGNORE_INDEX]),
                      "images": st[1, :NUM_FINE].tolist()} for s, st in stats.items()},
    }

