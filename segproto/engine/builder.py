"""Builds what the trainer and the entry points need from a config: datasets, loaders, method."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from segproto.data import DATA_KEYS, EvalSampler, InfiniteSampler, build_dataset


def data_dict(cfg: Any) -> dict:
    """The ``data`` section as the plain dict ``build_dataset`` reads (unset optional keys dropped,
    relative roots kept as given: callers resolve them against the launch directory)."""
    d = dataclasses.asdict(cfg.data)
    out = {k: v for k, v in d.items() if k in DATA_KEYS and v is not None}
    out["synthetic"] = dict(d["synthetic"])
    return out


def build_split(cfg: Any, split: str, train: bool):
    """The split's dataset; its few-shot view (:mod:`segproto.engine.fewshot`) when the config
    trains an episodic method or the base-class stage one."""
    dataset = build_dataset(data_dict(cfg), split, train)
    from .fewshot import uses_fewshot, wrap_fewshot

    return wrap_fewshot(cfg, dataset, train) if uses_fewshot(cfg) else dataset


def train_loader(dataset, cfg: Any, rank: int, world: int, start_draw: int, stream: int = 0) -> DataLoader:
    """Infinite loader; ``start_draw`` skips this rank's first draws (exact resume); ``stream`` 1 is
    the unlabelled stream of semi-supervised methods (its own shuffling seed)."""
    sampler = InfiniteSampler(len(dataset), seed=cfg.seed + 1_000_003 * stream, shuffle=True, rank=rank,
                              world_size=world, start=start_draw)
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_size=cfg.data.batch_size, sampler=sampler, num_workers=workers,
                      drop_last=True, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      generator=_own_generator(cfg.seed))


def eval_loader(dataset, cfg: Any, rank: int = 0, world: int = 1) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.data.val_batch_size, sampler=EvalSampler(len(dataset), rank, world),
                      num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available(),
                      generator=_own_generator(cfg.seed))


def _own_generator(seed: int) -> torch.Generator:
    """A loader-private generator: creating a loader iterator (which draws a worker base seed) must
    not consume the global RNG, or a resumed run's dropout masks would shift by one draw."""
    return torch.Generator().manual_seed(seed)


def level_target_fn(taxonomy, level: int) -> Optional[Any]:
    """Maps fine (level 0) labels to the training level, or None when training on level 0."""
    if level == 0:
        return None
    if taxonomy is None:
        raise ValueError(f"data.level is {level} but the dataset has no taxonomy")
    return lambda gt: taxonomy.map_labels(gt, 0, level)


def label_space(dataset, level: int) -> tuple[int, list[str], Optional[list]]:
    """(num_classes, class names, palette) at the training level; an episodic dataset predicts
    background / foreground."""
    if getattr(dataset, "episodic", False):
        return 2, ["background", "foreground"], [[0, 0, 0], [255, 255, 255]]
    tax = dataset.taxonomy
    if level == 0:
        return dataset.num_classes, dataset.classes, dataset.palette
    return tax.num_classes(level), tax.class_names(level), tax.palette(level)
