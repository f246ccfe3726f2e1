"""Datasets, transforms, samplers and taxonomies.

Three subpackages: :mod:`.synth` (the procedural benchmark), :mod:`.datasets` (real-dataset
loaders and converters) and :mod:`.pipeline` (dataset base, transforms, samplers, taxonomies,
few-shot episodes); :mod:`.build` joins them. The built-in benchmark is generated once by
:func:`generate_synthetic` and read, like any real dataset, by :class:`SegDataset`;
:func:`build_dataset` does both from a config dict.

The flat module paths of earlier layouts (``segproto.data.dataset``, ``segproto.data.convert``,
...) stay importable: :mod:`._moved` maps each to the module that holds its code now (the same
module object, so patching one patches the other).
"""

from . import _moved
from .build import (DATA_KEYS, DATASET_KINDS, SYNTHETIC_KEYS, DatasetKind, build_dataset, build_transform,
                    register_dataset)
from .datasets.cityscapes import (CITYSCAPES_CLASSES, CITYSCAPES_LABELS, CITYSCAPES_PALETTE,
                                  CityscapesDataset, CityscapesLabel, id_to_train_id_lut)
from .datasets import standard  # noqa: F401  (registers the standard benchmark kinds)
from .datasets import mapillary, pascal_part  # noqa: F401  (register mapillary_v2, pascal_part108)
from .pipeline.dataset import (DatasetError, FileListDataset, SegDataset, check_dataset, image_header,
                               load_folds, load_image, load_label, read_split)
from .pipeline.fewshot import (BaseClassDataset, EpisodeDataset, class_pixel_counts, fold_classes,
                               resolve_folds)
from .pipeline.sampler import EvalSampler, InfiniteSampler, mix_seed, sample_seed, seeded
from .synth.classes import build_taxonomy as synthetic_taxonomy
from .synth.synthetic import generate_synthetic, render_sample
from .pipeline.taxonomy import Taxonomy, TaxonomyError
from .pipeline.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform

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
