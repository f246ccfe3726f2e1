"""Evaluate a checkpoint: ``python -m segproto.test CONFIG CKPT [--out metrics.json] [--show-dir DIR]
[--split val] [--cfg-options ...]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from segproto.cli import add_config_args, load_or_exit, trained_or_exit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m segproto.test", description=__doc__.split("\n")[0])
    add_config_args(p)
    p.add_argument("checkpoint", help="training checkpoint (iter_N.pth) or exported model")
    p.add_argument("--out", help="write the metrics JSON here")
    p.add_argument("--show-dir", help="write colour overlays of the predictions here")
    p.add_argument("--split", help="dataset split (default: data.test_split)")
    a = p.parse_args(argv)
    cfg = load_or_exit(a.config, a.cfg_options)

    from segproto.engine.builder import eval_loader, level_target_fn
    from segproto.engine.evaluate import evaluate
    from segproto.engine.trainer import json_clean
    from segproto.evaluation import format_table

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    split = a.split or cfg.data.test_split
    dataset, k, names, palette, method = trained_or_exit(cfg, a.checkpoint, split, device)
    if getattr(dataset, "episodic", False):
        return _test_fewshot(cfg, dataset, method, device, a.out)
    metrics = evaluate(method, eval_loader(dataset, cfg), k, names, device, cfg.data.ignore_index,
                       dataset.taxonomy, cfg.data.level, target_fn=level_target_fn(dataset.taxonomy, cfg.data.level))
    print(format_table(metrics, names))
    for name, lv in metrics.get("levels", {}).items():
        print(f"level {name}: aAcc {lv['aAcc']:.2f}  mIoU {lv['mIoU']:.2f}  mAcc {lv['mAcc']:.2f}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(json_clean(metrics), indent=2))
    if a.show_dir:
        from segproto.infer import save_overlays

        save_overlays(method, dataset, a.show_dir, palette, device)
    return 0


def _test_fewshot(cfg, dataset, method, device, out) -> int:
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
            runs[seed] = evaluate_fewshot(method, eval_loader(ds, cfg), ds.class_ids, ds.class_names, device)
            print(f"seed {seed}:\n{format_fewshot(runs[seed])}")
    summary = {}
    for key in ("mIoU", "FB-IoU"):
        vals = [r[key] for r in runs.values()]
        summary[key] = statistics.fmean(vals)
        summary[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    print(f"{cfg.fewshot.shots}-shot, fold {cfg.fewshot.fold}, {len(runs)} seed(s) x {cfg.fewshot.val_episodes} "
          f"episodes: mIoU {summary['mIoU']:.2f} +- {summary['mIoU_std']:.2f}  "
          f"FB-IoU {summary['FB-IoU']:.2f} +- {summary['FB-IoU_std']:.2f}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(json_clean({**summary, "fold": cfg.fewshot.fold, "shots": cfg.fewshot.shots,
                                                    "seeds": {str(s): r for s, r in runs.items()}}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
