"""Generic segmentation datasets: mmseg-style folders and "image label" file lists.

Every sample is checked when loaded: unreadable images, image/label size mismatches and
label values outside ``[0, num_classes)`` that are not ``ignore_index`` raise
:class:`DatasetError` naming the file, so nothing is lost or remapped silently.

``__getitem__`` takes an ``int`` (evaluation: no randomness) or an ``(index, seed)`` tuple
from :class:`segproto.data.InfiniteSampler` (training: the seed drives augmentation). A
random transform called with an int index uses the index itself as seed (deterministic,
but the same augmentation every epoch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import yaml
from PIL import Image, UnidentifiedImageError

from segproto.labels import bad_label_mask

from .transforms import EvalTransform

__all__ = ["DatasetError", "read_split", "load_folds", "load_image", "load_label", "image_header", "check_dataset",
           "SegDataset", "FileListDataset"]

Transform = Callable[[np.ndarray, "np.ndarray | None", "int | None"],
                     "tuple[torch.Tensor, torch.Tensor | None]"]


class DatasetError(ValueError):
    """Bad dataset content (corrupt file, size mismatch, invalid label values)."""


def read_split(path: str | Path) -> list[str]:
    """Names listed in a split file: one per line; blank lines and ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def load_folds(root_or_file: str | Path) -> list[list[int]]:
    """Few-shot class folds from ``folds.yaml`` (a file, or a dataset root holding one).

    Returns:
        ``folds[f]`` = sorted class ids of fold ``f``; folds are disjoint.
    """
    path = Path(root_or_file)
    if path.is_dir():
        path = path / "folds.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"folds file not found: {path}")
    data = yaml.safe_load(path.read_text())
    folds = data.get("folds") if isinstance(data, dict) else None
    if not isinstance(folds, list) or not all(
            isinstance(f, list) and all(isinstance(c, int) for c in f) for f in folds):
        raise DatasetError(f"{path}: expected 'folds' as a list of lists of class ids")
    seen: dict[int, int] = {}
    for fi, fold in enumerate(folds):
        for c in fold:
            if c in seen:
                raise DatasetError(f"{path}: class {c} is in folds {seen[c]} and {fi}")
            seen[c] = fi
    return [sorted(f) for f in folds]


def load_image(path: str | Path) -> np.ndarray:
    """Reads an image as ``uint8 [H, W, 3]`` RGB (L and P images are expanded to RGB).

    Raises:
        FileNotFoundError: Missing file.
        DatasetError: Unreadable/corrupt file or a mode that cannot be read without loss
            (e.g. RGBA, 16-bit).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("RGB", "L", "P"):
                raise DatasetError(f"{path}: unsupported image mode {im.mode!r} "
                                   "(expected RGB, L or P)")
            return np.asarray(im.convert("RGB") if im.mode != "RGB" else im).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read image ({exc})") from exc


def image_header(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image from its header (the pixels are not decoded).

    Raises:
        FileNotFoundError: Missing file.
        DatasetError: Not an image, or a mode :func:`load_image` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from exc
    if mode not in ("RGB", "L", "P"):
        raise DatasetError(f"{path}: unsupported image mode {mode!r} (expected RGB, L or P)")
    return size


def check_dataset(dataset, what: str, full: bool = False, workers: int | None = None) -> None:
    """Checks every sample of a dataset before it is used (threads: PIL decodes without the GIL).

    Args:
        dataset: A dataset with ``check_sample`` (a few-shot view: its ``base``).
        what: How the split is named in messages, e.g. ``"data.val_split 'val'"``.
        full: Decode the images too (else their headers only).

    Raises:
        DatasetError: The split is empty, or a sample fails (the first bad file is named).
        FileNotFoundError: A listed file is missing.
    """
    from concurrent.futures import ThreadPoolExecutor

    base = getattr(dataset, "base", dataset)
    if len(base) == 0:
        where = getattr(base, "split_file", None) or getattr(base, "img_dir", None) or "its source"
        raise DatasetError(f"{what} is empty: no images in {where}")
    if not hasattr(base, "check_sample"):
        return
    import os

    n = len(base)
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    if workers == 1 or n < 16:
        for i in range(n):
            base.check_sample(i, full)
        return
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda i: base.check_sample(i, full), range(n), chunksize=8):
            pass


def load_label(path: str | Path) -> np.ndarray:
    """Reads a single-channel label PNG as ``uint8`` or ``int32 [H, W]`` (raw values).

    P (palette) images give their indices; 16/32-bit images keep their values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "P"):
                return np.asarray(im).copy()
            if im.mode in ("I", "I;16", "I;16B", "I;16L"):
                return np.asarray(im).astype(np.int32)
            raise DatasetError(f"{path}: label must be a single-channel image (L, P or "
                               f"16-bit), got mode {im.mode!r}; convert colour-coded "
                               "labels to class ids first")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot read label ({exc})") from exc


class _PairedDataset(torch.utils.data.Dataset):
    """Shared loading/checking over parallel lists of image and label paths."""

    def __init__(self, names: list[str], img_paths: list[Path], ann_paths: list[Path] | None,
                 *, classes: Sequence[str], palette: Sequence[Sequence[int]] | None,
                 ignore_index: int, reduce_zero_label: bool, transform: Transform | None,
                 source: str) -> None:
        if not classes:
            raise ValueError(f"{source}: 'classes' must be a non-empty list of class names")
        self.names, self.img_paths, self.ann_paths = names, img_paths, ann_paths
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.palette = None if palette is None else [tuple(c) for c in palette]
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.transform = transform if transform is not None else EvalTransform()
        self.taxonomy = None  # set by build_dataset when the dataset has one
        missing = [p for p in img_paths if not p.is_file()]
        if ann_paths is not None:
            missing += [p for p in ann_paths if not p.is_file()]
        if missing:
            shown = ", ".join(str(p) for p in missing[:5])
            raise FileNotFoundError(f"{source}: {len(missing)} listed file(s) missing, "
                                    f"e.g. {shown}")

    def __len__(self) -> int:
        return len(self.names)

    def load_pair(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image ``i`` and its label file as stored (no remapping), sizes checked."""
        img = load_image(self.img_paths[i])
        if self.ann_paths is None:
            return img, None
        path = self.ann_paths[i]
        gt = load_label(path)
        if gt.shape != img.shape[:2]:
            raise DatasetError(f"size mismatch: image {self.img_paths[i]} is "
                               f"{img.shape[1]}x{img.shape[0]} but label {path} is "
                               f"{gt.shape[1]}x{gt.shape[0]} (WxH)")
        return img, gt

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw checked sample ``i``: ``uint8 [H, W, 3]`` and labels ``[H, W]`` (or None)."""
        img, gt = self.load_pair(i)
        if gt is None:
            return img, None
        return img, self._checked_label(self.ann_paths[i], gt)

    def _checked_label(self, path: Path, gt: np.ndarray) -> np.ndarray:
        if self.reduce_zero_label:  # 0 -> ignore, k -> k - 1 (ADE20K convention)
            gt = gt.astype(np.int32)
            gt = np.where(gt == 0, self.ignore_index,
                          np.where(gt == self.ignore_index, gt, gt - 1))
        bad = bad_label_mask(gt, self.num_classes, self.ignore_index)
        if bad.any():
            vals = np.unique(gt[bad])
            raise DatasetError(f"{path}: label values {vals[:10].tolist()} are outside "
                               f"[0, {self.num_classes}) and not ignore_index="
                               f"{self.ignore_index} ({int(bad.sum())} pixels)")
        return gt

    def check_sample(self, i: int, full: bool = False) -> None:
        """Checks sample ``i`` as :meth:`load` would, without decoding the image unless ``full``:
        the image header (size, mode), the label file and its values. A subclass that remaps
        label ids (its own :meth:`load`) is checked by loading the sample.

        Raises:
            FileNotFoundError, DatasetError: As :meth:`load`, naming the file.
        """
        if full or type(self).load is not _PairedDataset.load:
            self.load(i)
            return
        w, h = image_header(self.img_paths[i])
        if self.ann_paths is None:
            return
        path = self.ann_paths[i]
        gt = load_label(path)
        if gt.shape != (h, w):
            raise DatasetError(f"size mismatch: image {self.img_paths[i]} is {w}x{h} but label {path} is "
                               f"{gt.shape[1]}x{gt.shape[0]} (WxH)")
        self._checked_label(path, gt)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        """Sample dict: ``img`` float ``[3, H, W]``, ``gt`` int64 ``[H, W]``, ``name``."""
        if isinstance(index, (tuple, list)):
            i, seed = int(index[0]), int(index[1])
        else:
            i, seed = int(index), None
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for dataset of size {len(self)}")
        i %= len(self)
        img, gt = self.load(i)
        if seed is None and getattr(self.transform, "random", False):
            seed = i
        t_img, t_gt = self.transform(img, gt, seed)
        out = {"img": t_img, "name": self.names[i]}
        if t_gt is not None:
            out["gt"] = t_gt
        return out


def _resolve(root: Path, p: str | Path) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else root / p


class SegDataset(_PairedDataset):
    """mmseg-style folder dataset: ``root/img_dir/<name><img_suffix>`` with labels
    ``root/ann_dir/<name><seg_map_suffix>``.

    Args:
        root: Dataset root (must exist).
        img_dir: Image folder, relative to ``root`` or absolute.
        ann_dir: Label folder, or None for an unlabelled set (samples have no ``gt``).
        split: Split file (one name per line, relative to ``root`` or absolute), or None
            for every ``*<img_suffix>`` file under ``img_dir`` (recursively, sorted).
        img_suffix, seg_map_suffix: File name endings after the name.
        classes: Class names; label ids are their positions.
        palette: Optional ``[K, 3]`` RGB colours.
        ignore_index: Label value excluded from training and metrics.
        reduce_zero_label: Map 0 to ignore and ``k`` to ``k - 1`` when loading.
        transform: ``(img, gt, seed) -> (img_tensor, gt_tensor)``; default: normalise.
    """

    def __init__(self, root: str | Path, img_dir: str | Path, ann_dir: str | Path | None,
                 split: str | Path | None, *, img_suffix: str = ".png",
                 seg_map_suffix: str = ".png", classes: Sequence[str],
                 palette: Sequence[Sequence[int]] | None = None, ignore_index: int = 255,
                 reduce_zero_label: bool = False, transform: Transform | None = None) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        self.img_dir = _resolve(self.root, img_dir)
        if not self.img_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.img_dir}")
        self.ann_dir = None if ann_dir is None else _resolve(self.root, ann_dir)
        if self.ann_dir is not None and not self.ann_dir.is_dir():
            raise FileNotFoundError(f"label folder not found: {self.ann_dir}")
        if split is None:
            names = sorted(str(p.relative_to(self.img_dir))[: -len(img_suffix)]
                           for p in self.img_dir.rglob(f"*{img_suffix}"))
            if not names:
                raise FileNotFoundError(f"no '*{img_suffix}' images under {self.img_dir}")
            source = str(self.img_dir)
        else:
            self.split_file = _resolve(self.root, split)
            names = read_split(self.split_file)
            source = str(self.split_file)
        img_paths = [self.img_dir / f"{n}{img_suffix}" for n in names]
        ann_paths = (None if self.ann_dir is None
                     else [self.ann_dir / f"{n}{seg_map_suffix}" for n in names])
        super().__init__(names, img_paths, ann_paths, classes=classes, palette=palette,
                         ignore_index=ignore_index, reduce_zero_label=reduce_zero_label,
                         transform=transform, source=source)


class FileListDataset(_PairedDataset):
    """Dataset from a text file with ``img_path [label_path]`` per line.

    Paths are relative to ``root`` (default: the list file's folder) or absolute. Either
    every line has a label path or none does (an unlabelled set). The sample name is the
    image path as written. Other arguments as in :class:`SegDataset`.
    """

    def __init__(self, list_file: str | Path, root: str | Path | None = None, *,
                 classes: Sequence[str], palette: Sequence[Sequence[int]] | None = None,
                 ignore_index: int = 255, reduce_zero_label: bool = False,
                 transform: Transform | None = None) -> None:
        list_file = Path(list_file).expanduser()
        self.root = Path(root).expanduser() if root is not None else list_file.parent
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {self.root}")
        rows = [line.split() for line in read_split(list_file)]
        widths = {len(r) for r in rows}
        if not rows or not widths <= {1, 2} or len(widths) != 1:
            raise DatasetError(f"{list_file}: every line must hold 'img_path label_path' "
                               "(or every line only 'img_path'); got "
                               f"{sorted(widths) or 'no entries'} fields")
        names = [r[0] for r in rows]
        img_paths = [_resolve(self.root, r[0]) for r in rows]
        ann_paths = [_resolve(self.root, r[1]) for r in rows] if widths == {2} else None
        super().__init__(names, img_paths, ann_paths, classes=classes, palette=palette,
                         ignore_index=ignore_index, reduce_zero_label=reduce_zero_label,
                         transform=transform, source=str(list_file))
