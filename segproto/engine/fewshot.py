"""Few-shot wiring of the one trainer: episodic datasets and the episodic evaluation.

A config trains few-shot when its method is episodic (``method.name: hdmnet``): the training
split becomes episodes of the fold's base classes, the validation/test split seeded episodes of
its novel classes (``fewshot.val_episodes`` per seed). ``fewshot.base_training: true`` (stage one,
any non-episodic method, usually ``ce``) trains plain segmentation of the base classes, with the
novel classes ignored. Nothing here is specific to one few-shot model.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from segproto.evaluation import FewShotEvaluator
from segproto.methods import is_episodic

__all__ = ["uses_fewshot", "wrap_fewshot", "fold_split", "evaluate_fewshot", "format_fewshot",
           "feature_cache", "FEWSHOT_CLASSES"]

#: The label space of an episode's prediction.
FEWSHOT_CLASSES = ["background", "foreground"]


def uses_fewshot(cfg: Any) -> bool:
    """True when the config trains an episodic method or the base-class stage one."""
    return bool(cfg.fewshot.base_training) or is_episodic(cfg.method.name)


def fold_split(cfg: Any, dataset) -> tuple[list[int], list[int]]:
    """(novel, base) class ids of ``cfg.fewshot.fold`` in ``dataset``'s label space."""
    from segproto.data.pipeline.fewshot import fold_classes, resolve_folds

    folds = resolve_folds(cfg.fewshot.folds, Path(cfg.data.root).expanduser().absolute())
    novel, base = fold_classes(folds, cfg.fewshot.fold)
    bad = [c for c in (*novel, *base) if not 0 <= c < dataset.num_classes]
    if bad:
        raise ValueError(f"fewshot.folds: class ids {bad[:5]} are outside the dataset's "
                         f"{dataset.num_classes} classes ({cfg.fewshot.folds or 'folds.yaml'})")
    return list(novel), list(base)


def wrap_fewshot(cfg: Any, dataset, train: bool, seed: Optional[int] = None):
    """The split's few-shot view: base-class segmentation (stage one) or episodes.

    Args:
        cfg: The config (``fewshot`` section).
        dataset: The plain labelled dataset of the split.
        train: Training split (base-class episodes, drawn per step) or evaluation split
            (``fewshot.val_episodes`` novel-class episodes drawn once from ``seed``).
        seed: Seed of the evaluation episodes; default ``fewshot.eval_seeds[0]``.
    """
    from segproto.data.pipeline.dataset import DatasetError
    from segproto.data.pipeline.fewshot import BaseClassDataset, EpisodeDataset

    novel, base = fold_split(cfg, dataset)
    fs = cfg.fewshot
    if not is_episodic(cfg.method.name):  # stage one: base classes only, on every split
        return BaseClassDataset(dataset, base, ignore_index=cfg.data.ignore_index)
    if train:
        novel_rule = {"exclude": {"exclude_classes": novel}, "ignore": {"ignore_classes": novel},
                      "background": {}}[fs.novel_pixels]
        try:
            episodes = EpisodeDataset(dataset, base, fs.shots, min_fg_pixels=fs.min_fg_pixels, seed=cfg.seed,
                                      ignore_index=cfg.data.ignore_index, **novel_rule)
        except DatasetError as exc:
            if fs.novel_pixels != "exclude":
                raise
            raise DatasetError(f"{exc}; fewshot.novel_pixels=exclude drops every training image holding a pixel "
                               f"of a novel class {list(novel)}: where those classes are in most images, use "
                               "fewshot.novel_pixels=ignore") from None
    else:
        episodes = EpisodeDataset(dataset, novel, fs.shots, min_fg_pixels=fs.min_fg_pixels,
                                  num_episodes=fs.val_episodes, seed=fs.eval_seeds[0] if seed is None else seed,
                                  ignore_index=cfg.data.ignore_index)
    episodes.episodic, episodes.taxonomy = True, None
    episodes.class_ids = list(base if train else novel)
    episodes.class_names = [dataset.classes[c] for c in episodes.class_ids]
    return episodes


def feature_cache(model: nn.Module) -> contextlib.AbstractContextManager:
    """The evaluation block of a method (:meth:`segproto.methods.Method.feature_cache`; HDMNet's
    memoises its frozen backbone), also through a DDP wrapper; a no-op block for a module without
    the hook."""
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    hook = getattr(inner, "feature_cache", None)
    return hook() if callable(hook) else contextlib.nullcontext()


@torch.no_grad()
def evaluate_fewshot(model: nn.Module, loader: DataLoader, class_ids: list[int], class_names: list[str],
                     device: torch.device, amp_dtype: Optional[torch.dtype] = None, on_batch=None) -> dict[str, Any]:
    """Runs an episodic model over seeded episodes (``class_names[i]`` names ``class_ids[i]``);
    ``on_batch(batch, pred)`` is called after each batch (``pred [B, H, W]`` in {0, 1}).

    Returns:
        ``mIoU`` (mean over the fold's classes of the foreground IoU accumulated per class),
        ``FB-IoU`` (mean of foreground and background IoU accumulated over all episodes), both in
        percent, ``IoU`` and ``classes`` (per novel class), ``episodes``.
    """
    was_training = model.training
    model.eval()
    ev = FewShotEvaluator(class_ids, device=device)
    with feature_cache(model):  # frozen-backbone features of repeated images are computed once
        for batch in loader:
            img = batch["img"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(img, support_img=batch["support_img"].to(device, non_blocking=True),
                               support_mask=batch["support_mask"].to(device, non_blocking=True))
            pred = logits.float().argmax(1)
            ev.update(pred, batch["gt"].to(device), batch["cls"])
            if on_batch is not None:
                on_batch(batch, pred)
    ev.all_reduce()
    out = ev.compute()
    model.train(was_training)
    per_class = out["class_IoU"]
    return {"mIoU": out["mIoU"], "FB-IoU": out["FB-IoU"], "episodes": out["episodes"],
            "classes": list(class_names),
            "IoU": [per_class.get(c, float("nan")) for c in class_ids]}


def format_fewshot(metrics: dict) -> str:
    """Per-class foreground IoU table and the summary line."""
    names = [str(n) for n in metrics["classes"]]
    width = max([len("Class"), *map(len, names)])
    lines = [f"{'Class':<{width}}  {'IoU':>6}"]
    lines += [f"{n:<{width}}  {v:6.2f}" for n, v in zip(names, metrics["IoU"])]
    lines.append(f"mIoU: {metrics['mIoU']:.2f}  FB-IoU: {metrics['FB-IoU']:.2f}  episodes: {metrics['episodes']}")
    return "\n".join(lines)
