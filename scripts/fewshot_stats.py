"""Secondary statistics of the few-shot runs of ``scripts/fewshot.py`` (docs/results.md).

    python scripts/fewshot_stats.py [--episodes 2000]

Prints and writes ``benchmarks/results/fewshot/stats.json``:

- the paired distillation minus CE-only mIoU per fold (mean over training seeds),
- the per-class IoU at 1 and 5 shots per fold and variant (mean over training and episode seeds),
  read from the kept ``test_<k>shot.json`` files,
- the share of foreground query pixels in ``--episodes`` base-class episodes of the training split
  (a seeded draw from the distribution training samples, not one run's exact episodes) and in the
  seed-0 episodes of ``data.test_split`` (what ``segproto.test`` scores), against the last logged ``pred_fg`` (the model's foreground
  share on training queries) of each run still in ``work_dirs/fewshot``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fewshot as fs  # noqa: E402


def fold_paired_means(diffs: dict) -> dict:
    """{"fold<f>": {"<k>shot": mean over seeds}} of ``fs.paired()``'s per-(fold, seed) values."""
    out: dict = {}
    for key, row in diffs.items():
        fold = key.split("_")[0]
        for shot, v in row.items():
            out.setdefault(f"fold{fold}", {}).setdefault(shot, []).append(v)
    return {f: {s: statistics.mean(v) for s, v in row.items()} for f, row in sorted(out.items())}


def per_class(fold: int, variant: str, shots: int) -> dict:
    """{class name: mean IoU over every kept run and episode seed}."""
    acc: dict = {}
    for p in sorted(fs.RESULTS.glob(f"{variant}_fold{fold}_s*/test_{shots}shot.json")):
        for s in json.loads(p.read_text())["seeds"].values():
            for c, iou in zip(s["classes"], s["IoU"]):
                acc.setdefault(c, []).append(iou)
    return {c: statistics.mean(v) for c, v in acc.items()}


def foreground_share(fold: int, episodes: int) -> dict:
    """Foreground share (%) of the labelled query pixels: {"train": training-split episodes,
    "test": seed-0 episodes of ``data.test_split``}."""
    from segproto.config import load_config
    from segproto.engine.builder import build_split

    cfg = load_config(str(fs.REPO / fs.CFG), [f"fewshot.fold={fold}"])
    out = {}
    for key, split, train, n in (("train", cfg.data.train_split, True, episodes),
                                 ("test", cfg.data.test_split, False, cfg.fewshot.val_episodes)):
        ds = build_split(cfg, split, train)
        fg = tot = 0
        for i in range(min(n, len(ds))):
            gt = ds[i]["gt"]
            fg += int((gt == 1).sum())
            tot += int((gt != cfg.data.ignore_index).sum())
        out[key] = 100.0 * fg / max(tot, 1)
    return out


def last_pred_fg(run: Path) -> float | None:
    """The last ``pred_fg`` logged in the run's ``scalars.jsonl`` (%), None without the file."""
    log = run / "scalars.jsonl"
    if not log.is_file():
        return None
    vals = [r["pred_fg"] for r in map(json.loads, log.read_text().splitlines()) if "pred_fg" in r]
    return 100.0 * vals[-1] if vals else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--episodes", type=int, default=2000, help="training episodes to count")
    args = ap.parse_args(argv)
    stats: dict = {"paired_mIoU_difference_per_fold": fold_paired_means(fs.paired()),
                   "per_class_IoU": {}, "foreground_percent": {}}
    for f, row in stats["paired_mIoU_difference_per_fold"].items():
        print(f"{f}: distill - CE only mIoU, seed mean: "
              + ", ".join(f"{s} {v:+.2f}" for s, v in row.items()))
    for f in args.folds:
        for variant in fs.VARIANTS:
            for k in fs.SHOTS:
                pc = per_class(f, variant, k)
                if pc:
                    stats["per_class_IoU"].setdefault(f"fold{f}", {}).setdefault(variant, {})[f"{k}shot"] = pc
                    print(f"fold {f} {variant} {k}-shot IoU: " + ", ".join(f"{c} {v:.1f}" for c, v in pc.items()))
        share = foreground_share(f, args.episodes)
        preds = {run.name: last_pred_fg(run) for run in sorted((fs.REPO / "work_dirs/fewshot").glob(f"*_fold{f}_s*"))
                 if run.is_dir()}
        preds = {k: v for k, v in preds.items() if v is not None}
        share["pred_fg_last"] = preds
        stats["foreground_percent"][f"fold{f}"] = share
        print(f"fold {f}: foreground share of query pixels: training episodes {share['train']:.2f}%, "
              f"test episodes {share['test']:.2f}%; last pred_fg per run: "
              + ", ".join(f"{k} {v:.1f}%" for k, v in preds.items()))
    out = fs.RESULTS / "stats.json"
    out.write_text(json.dumps(stats, indent=1) + "\n")
    print(f"wrote {out.relative_to(fs.REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
