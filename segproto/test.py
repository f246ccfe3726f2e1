"""Evaluate a checkpoint: ``python -m segproto.test CONFIG CKPT [--out metrics.json] [--show-dir DIR]
[--split val] [--mode slide --crop H W --stride H W] [--flip] [--scales R ...] [--force] [--debug]
[--cfg-options ...]``.

The test-time mode is the config's ``test`` section; the flags that are given override it.

With ``--out m.json`` the dataset-level confusion matrix is also written as ``m_confusion.json``
(counts, rows = ground truth) and ``m_confusion.png`` (heat map, rows normalised); ``--confusion``
names another place. ``--show-dir`` writes, per image, image | ground truth | prediction with a
legend of the classes in it (few-shot: supports | query | ground truth | prediction, for the
episodes of the first seed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from segproto.cli import (add_config_args, add_debug_arg, add_test_mode_args, load_or_exit, output_path,
                          refuse_existing, run_or_exit, test_mode_or_exit)
from segproto.visualize import write_confusion


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m segproto.test", description=__doc__.split("\n\n")[0])
    add_config_args(p)
    p.add_argument("checkpoint", help="training checkpoint (iter_N.pth) or exported model (pth)")
    p.add_argument("--out", help="write the metrics JSON here (and the confusion matrix next to it)")
    p.add_argument("--confusion", help="write the confusion matrix JSON here (its heat map as .png beside it)")
    p.add_argument("--show-dir", help="write image | ground truth | prediction pictures here")
    p.add_argument("--split", help="dataset split (default: data.test_split)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --out / --confusion file or --show-dir pictures")
    add_debug_arg(p)
    add_test_mode_args(p)
    a = p.parse_args(argv)
    cfg = load_or_exit(a.config, a.cfg_options, a.debug)
    mode = test_mode_or_exit(a, cfg.test)
    return run_or_exit(lambda: _test(a, cfg, mode), a.debug)


def _outputs(a: argparse.Namespace) -> Optional[str]:
    """Checks the output paths before anything runs; returns the confusion matrix path (if any)."""
    cm_path = a.confusion or (str(Path(a.out).with_name(Path(a.out).stem + "_confusion.json")) if a.out else None)
    if a.out:
        output_path(a.out, "--out", a.force)
    if cm_path:
        output_path(cm_path, "--confusion" if a.confusion else "--out (its confusion matrix)", a.force)
        output_path(Path(cm_path).with_suffix(".png"), "--confusion (its heat map)", a.force)
    if a.show_dir:
        output_path(a.show_dir, "--show-dir", folder=True)
    return cm_path


def _test(a: argparse.Namespace, cfg, mode) -> int:
    from segproto.engine.builder import eval_loader, level_target_fn
    from segproto.engine.evaluate import evaluate
    from segproto.engine.loading import load_for_inference
    from segproto.engine.trainer import json_clean
    from segproto.evaluation import format_table

    cm_path = _outputs(a)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    split = a.split or cfg.data.test_split
    dataset, k, names, palette, method = load_for_inference(cfg, a.checkpoint, split, device)
    if a.show_dir:
        _refuse_old_pictures(Path(a.show_dir), dataset, a.force)
    if getattr(dataset, "episodic", False):
        if not mode.plain:
            print("error: --mode slide, --flip and --scales apply to segmentors, not to few-shot models",
                  file=sys.stderr)
            return 2
        return _test_fewshot(cfg, dataset, method, device, a.out, a.show_dir)
    from segproto.deploy import default_palette

    palette = palette or default_palette(k)
    on_batch = _show_segmentation(a.show_dir, cfg, names, palette) if a.show_dir else None
    metrics = evaluate(method, eval_loader(dataset, cfg), k, names, device, cfg.data.ignore_index,
                       dataset.taxonomy, cfg.data.level, target_fn=level_target_fn(dataset.taxonomy, cfg.data.level),
                       test_mode=None if mode.plain else mode, on_batch=on_batch, keep_confusion=True)
    confusion = metrics.pop("confusion")
    print(format_table(metrics, names))
    for name, lv in metrics.get("levels", {}).items():
        print(f"level {name}: aAcc {lv['aAcc']:.2f}  mIoU {lv['mIoU']:.2f}  mAcc {lv['mAcc']:.2f}")
    if not mode.plain:
        metrics["test_mode"] = {"mode": mode.mode, "crop": mode.crop, "stride": mode.stride, "flip": mode.flip,
                                "scales": list(mode.scales)}
    if a.out:
        Path(a.out).write_text(json.dumps(json_clean(metrics), indent=2))
    if cm_path:
        write_confusion(confusion, names, cm_path, f"{Path(a.checkpoint).name}, split {split}")
        print(f"confusion matrix: {cm_path} and {Path(cm_path).with_suffix('.png')}")
    return 0


def _refuse_old_pictures(show_dir: Path, dataset, force: bool) -> None:
    """The pictures this evaluation would write over (one per image, or ``episode_*``) need ``--force``."""
    if getattr(dataset, "episodic", False):
        there = sorted(show_dir.glob("episode_*.png"))
    else:
        there = [show_dir / f"{n}.png" for n in getattr(dataset, "names", [])]
    refuse_existing(there, "--show-dir", force)


def _show_segmentation(show_dir, cfg, names, palette):
    """``on_batch`` writing image | ground truth | prediction with a legend per image."""
    from PIL import Image

    from segproto.visualize import colorize, denormalize, side_by_side

    out = Path(show_dir)
    out.mkdir(parents=True, exist_ok=True)
    ignore = cfg.data.ignore_index

    def draw(batch, pred, gt):
        for i in range(pred.shape[0]):
            p, g = pred[i].cpu().numpy(), gt[i].cpu().numpy()
            img = denormalize(batch["img"][i], cfg.data.mean, cfg.data.std)
            present = sorted(set(np.unique(p).tolist()) | (set(np.unique(g).tolist()) - {ignore}))
            pic = side_by_side([img, colorize(g, palette, ignore), colorize(p, palette)], names, palette, present,
                               ["image", "ground truth", "prediction"])
            target = out / f"{batch['name'][i]}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pic).save(target)

    return draw


def _show_fewshot(show_dir, cfg, class_names_of):
    """``on_batch`` writing supports | query | ground truth | prediction per episode."""
    from PIL import Image

    from segproto.visualize import colorize, denormalize, overlay, side_by_side

    out = Path(show_dir)
    out.mkdir(parents=True, exist_ok=True)
    pal = [[0, 0, 0], [255, 0, 0]]
    count = [0]

    def draw(batch, pred):
        for i in range(pred.shape[0]):
            cls = int(batch["cls"][i])
            panels = [overlay(denormalize(s, cfg.data.mean, cfg.data.std), (m == 1).long().cpu().numpy(), pal, 0.4)
                      for s, m in zip(batch["support_img"][i], batch["support_mask"][i])]
            g = batch["gt"][i].cpu().numpy()
            panels += [denormalize(batch["img"][i], cfg.data.mean, cfg.data.std),
                       colorize(g, pal, cfg.data.ignore_index), colorize(pred[i].cpu().numpy(), pal)]
            titles = [f"support {j + 1}" for j in range(len(panels) - 3)] + ["query", "ground truth", "prediction"]
            name = class_names_of.get(cls, str(cls))
            pic = side_by_side(panels, ["background", name], pal, [0, 1], titles)
            Image.fromarray(pic).save(out / f"episode_{count[0]:05d}_{name.replace('/', '_')}.png")
            count[0] += 1

    return draw


def _test_fewshot(cfg, dataset, method, device, out, show_dir=None) -> int:
    """Few-shot configs: ``fewshot.val_episodes`` seeded episodes for each of ``fewshot.eval_seeds``,
    metrics per seed and their mean and sample std."""
    import statistics

    from segproto.engine.builder import eval_loader
    from segproto.engine.fewshot import evaluate_fewshot, feature_cache, format_fewshot
    from segproto.engine.trainer import json_clean

    runs = {}
    with feature_cache(method):  # one cache over all seeds: the same images come back
        for i, seed in enumerate(cfg.fewshot.eval_seeds):
            ds = dataset if i == 0 else dataset.with_seed(seed)
            show = (_show_fewshot(show_dir, cfg, dict(zip(ds.class_ids, ds.class_names)))
                    if show_dir and i == 0 else None)
            runs[seed] = evaluate_fewshot(method, eval_loader(ds, cfg), ds.class_ids, ds.class_names, device,
                                          on_batch=show)
            print(f"seed {seed}:\n{format_fewshot(runs[seed])}")
    summary = {}
    for key in ("mIoU", "FB-IoU"):
        vals = [r[key] for r in runs.values()]
        summary[key] = statistics.fmean(vals)
        summary[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    print(f"{cfg.fewshot.shots}-shot, fold {cfg.fewshot.fold}, {len(runs)} seed(s) x {cfg.fewshot.val_episodes} "
          f"episodes: mIoU {summary['mIoU']:.2f} +- {summary['mIoU_std']:.2f}  "
          f"FB-IoU {summary['FB-IoU']:.2f} +- {summary['FB-IoU_std']:.2f}")
    if show_dir:
        print(f"episode pictures (seed {cfg.fewshot.eval_seeds[0]}): {show_dir}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(json_clean({**summary, "fold": cfg.fewshot.fold, "shots": cfg.fewshot.shots,
                                                    "seeds": {str(s): r for s, r in runs.items()}}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
