"""``build_dataset``: config section (a plain dict) -> dataset.

Keys read (all optional unless marked):

=================  =========================================================================
``dataset``        ``"synthetic"`` (default), ``"folder"``, ``"filelist"`` or ``"cityscapes"``
``root``           dataset root (required; synthetic: generated there if missing)
``synthetic``      generation params: ``num_train, num_val, num_test, image_size, seed,
                   num_workers, overwrite`` (see :func:`generate_synthetic`); if absent,
                   an existing tree at ``root`` is used as is, else defaults are generated
``img_dir``        default ``"img_dir/{subset}"``
``ann_dir``        default ``"ann_dir/{subset}"``; ``null`` = unlabelled
``split_file``     default ``"splits/{split}.txt"``; ``null`` = all images in ``img_dir``.
                   For ``folder``, a missing *default* split file also means all images.
``subsets``        ``{split: subset}`` overrides; by default the subset of a split is its
                   prefix before ``_`` (``train_labeled_1-8`` -> ``train``)
``list_file``      ``filelist`` only (required): e.g. ``"lists/{split}.txt"``
``img_suffix``     ``".png"``; ``seg_map_suffix``: ``".png"``
``classes``        class names (required for folder/filelist unless ``taxonomy`` is set)
``palette``        ``[[r, g, b], ...]``
``taxonomy``       taxonomy YAML (relative to root, absolute, or ``builtin:cityscapes``
                   for a shipped one); synthetic default ``"taxonomy.yaml"``
``ignore_index``   255;  ``reduce_zero_label``: false
``crop_size``      train crop ``int`` or ``[h, w]`` (required when ``train``)
``scale_range``    ``[0.5, 2.0]``;  ``flip``: true (prob 0.5) or a probability
``cat_max_ratio``  null (no retry)
``mean``, ``std``  ImageNet statistics in 0..255 units
=================  =========================================================================
``{split}`` and ``{subset}`` in path templates are substituted.

``cityscapes`` (official layout, see :mod:`segproto.data.cityscapes`) changes the defaults:
``img_dir`` ``"leftImg8bit/{subset}"``, ``ann_dir`` ``"gtFine/{subset}"``, ``split_file``
null (every image of the subset; a split file that is set but missing for a plain
``train``/``val``/``test`` split also means every image), ``img_suffix``
``"_leftImg8bit.png"``, ``seg_map_suffix`` ``"_gtFine_labelIds.png"`` (ids mapped to the 19
trainIds) or ``"_gtFine_labelTrainIds.png"`` (read as is); ``classes`` and ``palette``
default to the 19 trainId classes.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Mapping

from .cityscapes import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IMG_SUFFIX, LABEL_IDS_SUFFIX,
                         CityscapesDataset)
from .dataset import FileListDataset, SegDataset, _PairedDataset
from .synthetic import generate_synthetic
from .taxonomy import Taxonomy
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

__all__ = ["build_dataset", "build_transform", "DATA_KEYS", "SYNTHETIC_KEYS"]

DATA_KEYS = ("dataset", "root", "synthetic", "img_dir", "ann_dir", "split_file", "subsets",
             "list_file", "img_suffix", "seg_map_suffix", "classes", "palette", "taxonomy",
             "ignore_index", "reduce_zero_label", "crop_size", "scale_range", "flip",
             "cat_max_ratio", "mean", "std")
SYNTHETIC_KEYS = ("num_train", "num_val", "num_test", "image_size", "seed", "num_workers",
                  "overwrite")
_SENTINEL = object()


BUILTIN_TAXONOMIES = Path(__file__).parent / "taxonomies"


def taxonomy_path(spec: str, root: Path) -> Path:
    """``builtin:NAME`` -> the packaged ``segproto/data/taxonomies/NAME.yaml``; an absolute path as
    is; otherwise relative to the dataset root."""
    if spec.startswith("builtin:"):
        path = BUILTIN_TAXONOMIES / f"{spec[len('builtin:'):]}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in BUILTIN_TAXONOMIES.glob("*.yaml"))
            raise FileNotFoundError(f"data config: taxonomy '{spec}' is not shipped; built-in taxonomies: {shipped}")
        return path
    return root / spec


def build_transform(cfg: Mapping[str, Any], train: bool) -> TrainTransform | EvalTransform:
    """Train (seeded rescale/crop/flip + normalise) or eval (normalise) transform."""
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    if not train:
        return EvalTransform(mean, std)
    if cfg.get("crop_size") is None:
        raise KeyError("data config: 'crop_size' is required for a training dataset")
    return TrainTransform(cfg["crop_size"], cfg.get("scale_range", (0.5, 2.0)),
                          cfg.get("flip", True), mean, std, cfg.get("ignore_index", 255),
                          cfg.get("cat_max_ratio"))


def _subset(cfg: Mapping[str, Any], split: str) -> str:
    subsets = cfg.get("subsets") or {}
    if split in subsets:
        return str(subsets[split])
    head = split.split("_", 1)[0]
    return head if head in ("train", "val", "test") else split


def _fmt(template: Any, split: str, subset: str) -> Any:
    return None if template is None else str(template).format(split=split, subset=subset)


def _synthetic_root(cfg: Mapping[str, Any], root: Path) -> dict:
    """Generates (or checks) the dataset and returns its ``meta.json``.

    Without a ``synthetic`` section an existing generated tree is used as is; with one, its
    parameters must match the tree's (or generation happens / an error names the diff).
    """
    if cfg.get("synthetic") is None and (root / "meta.json").is_file():
        return json.loads((root / "meta.json").read_text())
    params = dict(cfg.get("synthetic") or {})
    unknown = [k for k in params if k not in SYNTHETIC_KEYS]
    if unknown:
        hints = {k: difflib.get_close_matches(k, SYNTHETIC_KEYS, 1) for k in unknown}
        msg = ", ".join(f"'{k}'" + (f" (did you mean '{h[0]}'?)" if h else "")
                        for k, h in hints.items())
        raise KeyError(f"data config 'synthetic': unknown key(s) {msg}; "
                       f"known: {list(SYNTHETIC_KEYS)}")
    generate_synthetic(root, **params)
    return json.loads((root / "meta.json").read_text())


def build_dataset(cfg_data: Mapping[str, Any], split: str, train: bool) -> _PairedDataset:
    """Builds the dataset of one split from the data config section.

    Args:
        cfg_data: Plain dict with the keys in this module's docstring.
        split: Split name, e.g. ``"train"``, ``"val"``, ``"train_labeled_1-8"``.
        train: Use the seeded training transform (else normalisation only).

    Returns:
        A :class:`SegDataset` (or :class:`FileListDataset`) with ``.taxonomy`` set when
        the dataset has one.
    """
    kind = cfg_data.get("dataset", "synthetic")
    if cfg_data.get("root") is None:
        raise KeyError("data config: 'root' is required")
    root = Path(cfg_data["root"]).expanduser().absolute()
    subset = _subset(cfg_data, split)
    classes, palette = cfg_data.get("classes"), cfg_data.get("palette")
    tax_file = cfg_data.get("taxonomy")
    if kind == "synthetic":
        meta = _synthetic_root(cfg_data, root)
        classes = classes or meta["classes"]
        palette = palette or meta["palette"]
        tax_file = tax_file or "taxonomy.yaml"
    elif kind == "cityscapes":
        classes = classes or CITYSCAPES_CLASSES
        palette = palette or CITYSCAPES_PALETTE
    elif kind not in ("folder", "filelist"):
        raise ValueError(f"data config: unknown dataset '{kind}' "
                         "(expected 'synthetic', 'folder', 'filelist' or 'cityscapes')")
    taxonomy = Taxonomy.from_yaml(taxonomy_path(tax_file, root)) if tax_file else None
    if classes is None and taxonomy is not None:
        classes, palette = taxonomy.class_names(0), palette or taxonomy.palette(0)
    elif taxonomy is not None and list(classes) != taxonomy.class_names(0):
        raise ValueError(f"data config: 'classes' ({len(classes)}: {list(classes)[:5]}...) differ from the finest "
                         f"level of taxonomy {taxonomy.source} ({taxonomy.num_classes(0)}: "
                         f"{taxonomy.class_names(0)[:5]}...); they must list the same names in the same order")
    if not classes:
        raise KeyError(f"data config: '{kind}' dataset needs 'classes' (or 'taxonomy')")
    common = dict(classes=classes, palette=palette,
                  ignore_index=cfg_data.get("ignore_index", 255),
                  reduce_zero_label=cfg_data.get("reduce_zero_label", False),
                  transform=build_transform(cfg_data, train))
    if kind == "filelist":
        if not cfg_data.get("list_file"):
            raise KeyError("data config: 'filelist' dataset needs 'list_file'")
        list_file = root / _fmt(cfg_data["list_file"], split, subset)  # absolute stays
        ds: _PairedDataset = FileListDataset(list_file, root, **common)
    elif kind == "cityscapes":
        split_file = _fmt(cfg_data.get("split_file"), split, subset)
        if (split_file is not None and split == subset and subset in ("train", "val", "test")
                and not (root / split_file).is_file()):
            split_file = None  # a plain subset split without its own split file: every image
        ds = CityscapesDataset(root, _fmt(cfg_data.get("img_dir", "leftImg8bit/{subset}"), split, subset),
                               _fmt(cfg_data.get("ann_dir", "gtFine/{subset}"), split, subset),
                               split_file, img_suffix=cfg_data.get("img_suffix", IMG_SUFFIX),
                               seg_map_suffix=cfg_data.get("seg_map_suffix", LABEL_IDS_SUFFIX),
                               **common)
    else:
        split_t = cfg_data.get("split_file", _SENTINEL)
        split_file = _fmt("splits/{split}.txt" if split_t is _SENTINEL else split_t,
                          split, subset)
        if (kind == "folder" and split_t is _SENTINEL
                and not (root / split_file).is_file()):
            split_file = None
        ds = SegDataset(root, _fmt(cfg_data.get("img_dir", "img_dir/{subset}"), split, subset),
                        _fmt(cfg_data.get("ann_dir", "ann_dir/{subset}"), split, subset),
                        split_file, img_suffix=cfg_data.get("img_suffix", ".png"),
                        seg_map_suffix=cfg_data.get("seg_map_suffix", ".png"), **common)
    ds.taxonomy = taxonomy
    return ds
