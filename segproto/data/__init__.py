"""Datasets, transforms, samplers and taxonomies.

The built-in benchmark is generated once by :func:`generate_synthetic` and read, like any
real dataset, by :class:`SegDataset`; :func:`build_dataset` does both from a config dict.
"""

from .build import (DATA_KEYS, DATASET_KINDS, SYNTHETIC_KEYS, DatasetKind, build_dataset, build_transform,
                    register_dataset)
from .cityscapes import (CITYSCAPES_CLASSES, CITYSCAPES_LABELS, CITYSCAPES_PALETTE,
                         CityscapesDataset, CityscapesLabel, id_to_train_id_lut)
from . import datasets_std  # noqa: F401  (registers the standard benchmark kinds)
from . import mapillary, pascal_part  # noqa: F401  (register mapillary_v2, pascal_part108)
from .dataset import (DatasetError, FileListDataset, SegDataset, check_dataset, image_header, load_folds,
                      load_image, load_label, read_split)
from .fewshot import (BaseClassDataset, EpisodeDataset, class_pixel_counts, fold_classes,
                      resolve_folds)
from .sampler import EvalSampler, InfiniteSampler, mix_seed, sample_seed, seeded
from .synth_classes import build_taxonomy as synthetic_taxonomy
from .synthetic import generate_synthetic, render_sample
from .taxonomy import Taxonomy, TaxonomyError
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

__all__ = [
    "DATA_KEYS", "DATASET_KINDS", "SYNTHETIC_KEYS", "DatasetKind", "build_dataset", "build_transform",
    "register_dataset",
    "CITYSCAPES_CLASSES", "CITYSCAPES_LABELS", "CITYSCAPES_PALETTE", "CityscapesDataset",
    "CityscapesLabel", "id_to_train_id_lut",
    "DatasetError", "FileListDataset", "SegDataset", "check_dataset", "image_header", "load_folds", "load_image",
    "load_label", "read_split",
    "BaseClassDataset", "EpisodeDataset", "class_pixel_counts", "fold_classes", "resolve_folds",
    "EvalSampler", "InfiniteSampler", "mix_seed", "sample_seed", "seeded",
    "synthetic_taxonomy", "generate_synthetic", "render_sample",
    "Taxonomy", "TaxonomyError",
    "IMAGENET_MEAN", "IMAGENET_STD", "EvalTransform", "TrainTransform",
]
