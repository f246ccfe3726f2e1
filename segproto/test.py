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
    dataset, k, names, palette, method = trained_or_exit(cfg, a.checkpoint, a.split or cfg.data.test_split, device)
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


if __name__ == "__main__":
    sys.exit(main())
