"""Probes a trained HDMNet run against its own prior mask: ranking (AUC) and thresholds.

    python scripts/fewshot_probe.py work_dirs/fewshot_pretrained128/distill_fold0_s0 \\
        [--checkpoint iter_1000.pth] [--classes novel|base] [--episodes 200] [--seed 0] [--out FILE]

``--classes novel`` draws the run's evaluation episodes (novel classes, ``data.val_split``);
``base`` draws episodes of the base classes on the training images, with the evaluation transform
(what the model was trained on, without augmentation). For each pixel it takes the model's
foreground probability and the prior mask the model was given (mean of its layer4 and layer3 priors,
in [0, 1], the ``prior_only`` floor of ``scripts/fewshot.py``), and reports:

- ``fg_share``: true foreground share of the labelled query pixels; ``pred_share``: the model's at 0.5;
- ``mean_p_fg_on_fg`` / ``mean_p_fg_on_bg``;
- ``auc``: the probability that a random foreground pixel scores above a random background pixel
  (ties count one half), for the model and the prior: how well each ranks, whatever the threshold;
- ``mIoU``: the few-shot mIoU (``FewShotEvaluator``) when foreground = score > t, for several t.

A model that ranks below its prior has learned features that do not carry over to the episodes'
classes; one that ranks well but scores low at 0.5 is mis-calibrated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

THRESHOLDS = (0.5, 0.3, 0.2, 0.1, 0.05)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties (NaN without positives or negatives)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _episodes(cfg, classes: str, n: int, seed: int):
    from segproto.data.pipeline.fewshot import EpisodeDataset
    from segproto.engine.builder import build_dataset, data_dict
    from segproto.engine.fewshot import fold_split

    split = cfg.data.val_split if classes == "novel" else cfg.data.train_split
    plain = build_dataset(data_dict(cfg), split, False)
    novel, base = fold_split(cfg, plain)
    ids = novel if classes == "novel" else base
    ds = EpisodeDataset(plain, ids, cfg.fewshot.shots, min_fg_pixels=cfg.fewshot.min_fg_pixels,
                        num_episodes=n, seed=seed, ignore_index=cfg.data.ignore_index)
    return ds, list(ids)


@torch.no_grad()
def probe(run: Path, checkpoint: str, classes: str, episodes: int, seed: int) -> dict:
    from segproto.config import load_config
    from segproto.engine.builder import eval_loader
    from segproto.engine.loading import load_trained
    from segproto.evaluation import FewShotEvaluator

    cfg = load_config(str(run / "config.yaml"), [])
    ds, ids = _episodes(cfg, classes, episodes, seed)
    method = load_trained(cfg, str(run / checkpoint), 2, None, "cpu", ["background", "foreground"])
    model = method.model.eval()
    ignore = cfg.data.ignore_index
    probs, priors, gts, cls = [], [], [], []
    with model.cached_backbone():  # encode() below takes the frozen features forward() just computed
        for b in eval_loader(ds, cfg):
            out = model(b["img"], b["support_img"], b["support_mask"])
            probs.append(out["logits"].float().softmax(1)[:, 1])
            prior = model.encode(b["img"], b["support_img"], b["support_mask"])[2]  # [B, 2, h, w], x prior_scale
            priors.append(F.interpolate(prior.mean(1, keepdim=True) / model.prior_scale, b["img"].shape[-2:],
                                        mode="bilinear", align_corners=False)[:, 0])
            gts.append(b["gt"])
            cls.append(b["cls"])
    p, pr, g, c = torch.cat(probs), torch.cat(priors), torch.cat(gts), torch.cat(cls)
    valid = g != ignore
    fg = (g == 1) & valid
    out = {"run": str(run), "checkpoint": checkpoint, "classes": classes, "episodes": len(c), "seed": seed,
           "fold": cfg.fewshot.fold, "shots": cfg.fewshot.shots,
           "fg_share": 100 * fg.sum().item() / valid.sum().item(),
           "pred_share": 100 * ((p > 0.5) & valid).sum().item() / valid.sum().item(),
           "mean_p_fg_on_fg": p[fg].mean().item(), "mean_p_fg_on_bg": p[valid & ~fg].mean().item(),
           "auc": {}, "mIoU": {}}
    for name, score in (("model", p), ("prior", pr)):
        out["auc"][name] = auc(score[valid].numpy(), fg[valid].numpy())
        out["mIoU"][name] = {}
        for t in THRESHOLDS:
            ev = FewShotEvaluator(ids, ignore_index=ignore)
            ev.update((score > t).long(), g, c)
            out["mIoU"][name][str(t)] = ev.compute()["mIoU"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a stage-two work dir (config.yaml + checkpoint)")
    p.add_argument("--checkpoint", default="iter_1000.pth")
    p.add_argument("--classes", choices=("novel", "base"), default="novel")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the JSON here")
    a = p.parse_args(argv)
    for need in (a.run / "config.yaml", a.run / a.checkpoint):
        if not need.is_file():
            print(f"error: {need} not found (a stage-two HDMNet work dir and its checkpoint)", file=sys.stderr)
            return 2
    r = probe(a.run, a.checkpoint, a.classes, a.episodes, a.seed)
    print(f"{a.run.name} ({a.classes} classes, {r['episodes']} episodes): fg share {r['fg_share']:.2f}%, "
          f"predicted {r['pred_share']:.2f}%; mean p_fg on fg {r['mean_p_fg_on_fg']:.3f}, on bg "
          f"{r['mean_p_fg_on_bg']:.3f}")
    for name in ("model", "prior"):
        cuts = "  ".join(f"{t}: {v:.2f}" for t, v in r["mIoU"][name].items())
        print(f"  {name:5s} AUC {r['auc'][name]:.3f}  mIoU at thresholds {cuts}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
