"""``build_dataset``: config section (a plain dict) -> dataset.

Keys read (all optional unless marked):

=================  =========================================================================
``dataset``        a registered kind (:data:`DATASET_KINDS`, :func:`register_dataset`):
                   ``"synthetic"`` (default), ``"folder"``, ``"filelist"``, ``"cityscapes"``, ...
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
``{split}`` and ``{subset}`` in path templates are substituted. The defaults above are those
of the folder kinds; every kind has its own (absent keys take them).

``cityscapes`` (official layout, see :mod:`segproto.data.datasets.cityscapes`) changes the defaults:
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from .datasets.cityscapes import (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IMG_SUFFIX, LABEL_IDS_SUFFIX,
                         CityscapesDataset)
from .pipeline.dataset import DatasetError, FileListDataset, SegDataset, _PairedDataset
from .synth.synthetic import generate_synthetic
from .pipeline.taxonomy import Taxonomy
from .pipeline.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

__all__ = ["build_dataset", "build_transform", "register_dataset", "DatasetKind", "DATASET_KINDS",
           "DATA_KEYS", "SYNTHETIC_KEYS"]

DATA_KEYS = ("dataset", "root", "synthetic", "img_dir", "ann_dir", "split_file", "subsets",
             "list_file", "img_suffix", "seg_map_suffix", "classes", "palette", "taxonomy",
             "ignore_index", "reduce_zero_label", "crop_size", "scale_range", "flip",
             "cat_max_ratio", "mean", "std")
SYNTHETIC_KEYS = ("num_train", "num_val", "num_test", "image_size", "seed", "num_workers",
                  "overwrite")
_SENTINEL = object()
_NONE_MEANS_DEFAULT = ("img_suffix", "seg_map_suffix", "reduce_zero_label")


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


@dataclass(frozen=True)
class DatasetKind:
    """A named dataset layout: its default keys and how to build one split.

    Attributes:
        name: The ``dataset`` value in configs.
        defaults: Default data keys (``img_dir``, ``ann_dir``, ``split_file``, suffixes,
            ``reduce_zero_label``, ``classes``, ``palette``, ``taxonomy``...); config keys win.
        factory: ``factory(root, cfg, split, subset, common) -> dataset`` with ``cfg`` the
            merged keys and ``common`` the keyword arguments every dataset takes (classes,
            palette, ignore_index, reduce_zero_label, transform); None: a :class:`SegDataset`
            over ``img_dir``/``ann_dir``/``split_file``.
        summary: One line for error messages and docs.
    """

    name: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    factory: Optional[Callable[..., _PairedDataset]] = None
    summary: str = ""


DATASET_KINDS: dict[str, DatasetKind] = {}


def register_dataset(name: str, *, defaults: Optional[Mapping[str, Any]] = None,
                     factory: Optional[Callable[..., _PairedDataset]] = None, summary: str = "") -> DatasetKind:
    """Adds a dataset kind (``data.dataset: NAME``); a name can be registered once."""
    if name in DATASET_KINDS:
        raise ValueError(f"dataset kind '{name}' is already registered")
    kind = DatasetKind(name, dict(defaults or {}), factory, summary)
    DATASET_KINDS[name] = kind
    return kind


_FOLDER_DEFAULTS = {"img_dir": "img_dir/{subset}", "ann_dir": "ann_dir/{subset}", "img_suffix": ".png",
                    "seg_map_suffix": ".png", "reduce_zero_label": False}


def missing_split_error(root: Path, split: str, split_file: str) -> DatasetError:
    """The error of a named split whose split file does not exist: the file, and the splits that
    the same folder does hold (with a did-you-mean)."""
    path = Path(split_file) if Path(split_file).is_absolute() else root / split_file
    folder = path.parent
    known = sorted(p.stem for p in folder.glob(f"*{path.suffix}")) if folder.is_dir() else []
    hint = difflib.get_close_matches(split, known, 1)
    return DatasetError(f"split '{split}': split file {path} not found"
                        + (f" (did you mean '{hint[0]}'?)" if hint else "")
                        + (f"; splits in {folder}: {known}" if known else "")
                        + f"; only a split that is its own subset folder ('{split.split('_', 1)[0]}') means every "
                        "image without a file")


def _folder_factory(root: Path, cfg: Mapping[str, Any], split: str, subset: str, common: dict) -> _PairedDataset:
    """A :class:`SegDataset`; a missing *default* split file ``splits/{split}.txt`` means every image
    of a split that is its own subset (``train``, ``val``, ``train2014``), and is an error for a
    split that names a part of a subset (``train_labeled_1-8``): a typo or a split that is not
    there must not become the whole subset."""
    split_t = cfg.get("split_file", _SENTINEL)
    split_file = _fmt("splits/{split}.txt" if split_t is _SENTINEL else split_t, split, subset)
    if split_t is _SENTINEL and not (root / split_file).is_file():
        if split != subset:  # a named part of a subset (train_labeled_1-8 of train) must have its file
            raise missing_split_error(root, split, split_file)
        split_file = None
    return SegDataset(root, _fmt(cfg["img_dir"], split, subset), _fmt(cfg.get("ann_dir"), split, subset),
                      split_file, img_suffix=cfg["img_suffix"], seg_map_suffix=cfg["seg_map_suffix"], **common)


def _filelist_factory(root: Path, cfg: Mapping[str, Any], split: str, subset: str, common: dict) -> _PairedDataset:
    if not cfg.get("list_file"):
        raise KeyError("data config: 'filelist' dataset needs 'list_file'")
    return FileListDataset(root / _fmt(cfg["list_file"], split, subset), root, **common)  # absolute stays


def _cityscapes_factory(root: Path, cfg: Mapping[str, Any], split: str, subset: str,
                        common: dict) -> _PairedDataset:
    split_file = _fmt(cfg.get("split_file"), split, subset)
    if (split_file is not None and split == subset and subset in ("train", "val", "test")
            and not (root / split_file).is_file()):
        split_file = None  # a plain subset split without its own split file: every image
    return CityscapesDataset(root, _fmt(cfg["img_dir"], split, subset), _fmt(cfg.get("ann_dir"), split, subset),
                             split_file, img_suffix=cfg["img_suffix"], seg_map_suffix=cfg["seg_map_suffix"],
                             **common)


register_dataset("synthetic", defaults=_FOLDER_DEFAULTS, factory=_folder_factory,
                 summary="the built-in benchmark (generated at root when missing)")
register_dataset("folder", defaults=_FOLDER_DEFAULTS, factory=_folder_factory,
                 summary="mmseg-style img_dir/ann_dir folders (+ optional split files)")
register_dataset("filelist", defaults=_FOLDER_DEFAULTS, factory=_filelist_factory,
                 summary="'image label' pairs listed in list_file")
register_dataset("cityscapes", factory=_cityscapes_factory, summary="Cityscapes, official layout",
                 defaults={"img_dir": "leftImg8bit/{subset}", "ann_dir": "gtFine/{subset}", "split_file": None,
                           "img_suffix": IMG_SUFFIX, "seg_map_suffix": LABEL_IDS_SUFFIX, "reduce_zero_label": False,
                           "classes": CITYSCAPES_CLASSES, "palette": CITYSCAPES_PALETTE})


def build_dataset(cfg_data: Mapping[str, Any], split: str, train: bool) -> _PairedDataset:
    """Builds the dataset of one split from the data config section.

    Args:
        cfg_data: Plain dict with the keys in this module's docstring; keys that are absent
            (or None for ``img_suffix``, ``seg_map_suffix``, ``reduce_zero_label``) take the
            defaults of the dataset kind (:data:`DATASET_KINDS`).
        split: Split name, e.g. ``"train"``, ``"val"``, ``"train_labeled_1-8"``.
        train: Use the seeded training transform (else normalisation only).

    Returns:
        The dataset of the kind's factory (e.g. a :class:`SegDataset`) with ``.taxonomy`` set
        when the dataset has one.
    """
    name = cfg_data.get("dataset", "synthetic")
    if name not in DATASET_KINDS:
        hint = difflib.get_close_matches(str(name), list(DATASET_KINDS), 1)
        raise ValueError(f"data config: unknown dataset '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                         + f"; expected one of {sorted(DATASET_KINDS)}")
    kind = DATASET_KINDS[name]
    if cfg_data.get("root") is None:
        raise KeyError("data config: 'root' is required")
    cfg = {**kind.defaults, **{k: v for k, v in cfg_data.items()
                               if not (v is None and k in _NONE_MEANS_DEFAULT)}}
    root = Path(cfg["root"]).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise DatasetError(f"data.root {root} exists and is not a directory (expected the dataset folder)")
    subset = _subset(cfg, split)
    classes, palette = cfg.get("classes"), cfg.get("palette")
    tax_file = cfg.get("taxonomy")
    if name == "synthetic":
        meta = _synthetic_root(cfg_data, root)
        classes = classes or meta["classes"]
        palette = palette or meta["palette"]
        tax_file = tax_file or "taxonomy.yaml"
    taxonomy = Taxonomy.from_yaml(taxonomy_path(tax_file, root)) if tax_file else None
    if classes is None and taxonomy is not None:
        classes, palette = taxonomy.class_names(0), palette or taxonomy.palette(0)
    elif taxonomy is not None and list(classes) != taxonomy.class_names(0):
        raise ValueError(f"data config: 'classes' ({len(classes)}: {list(classes)[:5]}...) differ from the finest "
                         f"level of taxonomy {taxonomy.source} ({taxonomy.num_classes(0)}: "
                         f"{taxonomy.class_names(0)[:5]}...); they must list the same names in the same order")
    if not classes:
        raise KeyError(f"data config: '{name}' dataset needs 'classes' (or 'taxonomy')")
    common = dict(classes=classes, palette=palette, ignore_index=cfg.get("ignore_index", 255),
                  reduce_zero_label=bool(cfg.get("reduce_zero_label", False)),
                  transform=build_transform(cfg, train))
    ds = (kind.factory or _folder_factory)(root, cfg, split, subset, common)
    ds.taxonomy = taxonomy
    return ds
