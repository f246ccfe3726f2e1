"""Trains one early-stopped sweep trial on to the end of its schedule, outside Ray Tune.

    python scripts/sweep_continue.py work_dirs/sweep_pretrained128_pico fb3c85e4 \
        --out benchmarks/results/studies/sweeps/pretrained128_pico_continued

The trial's config is rebuilt the way ``search/trial.py`` builds it (the sweep's
``sweep_base.yaml`` with the trial's ``params.json`` applied) and the run continues exactly from
the trial's last checkpoint (``trial_<id>/checkpoint_NNNNNN/iter_N.pth``) in
``<sweep>/continued/trial_<id>``. ``--out`` receives ``<id>.json``: the trial's values, seed,
the checkpoint it continued from, its evaluations from Tune (``progress.csv``) and those of the
continuation. A rerun skips a trial whose record exists. An interrupted continuation resumes from
its own last checkpoint and keeps the evaluations made before it (``continuation_evals.json`` in
its folder); one interrupted before its first own checkpoint starts again from the trial's.

It serves sweeps whose early stopping is known to have been wrong for a trial (docs/results.md,
"PiCo sweep"): the continuation gives the score the trial would have reached had it gone on.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EVALS = "continuation_evals.json"  # the continuation's evaluations so far, beside its checkpoints


def last_checkpoint(trial_dir: Path) -> Path:
    """The ``iter_N.pth`` of the trial's newest ``checkpoint_NNNNNN`` folder.

    Raises:
        SystemExit: the trial folder holds no checkpoint file.
    """
    files = sorted(trial_dir.glob("checkpoint_*/iter_*.pth"))
    if not files:
        raise SystemExit(f"{trial_dir}: no checkpoint_NNNNNN/iter_N.pth to continue from")
    return max(files, key=lambda f: (f.parent.name, int(f.stem.removeprefix("iter_"))))


def tune_history(trial_dir: Path) -> list[dict]:
    """The trial's evaluations as Tune recorded them: ``[{"iter", "mIoU", "aAcc", "mAcc"}]``."""
    with open(trial_dir / "progress.csv", newline="") as f:
        return [{"iter": int(float(r["iter"])), **{k: float(r[k]) for k in ("mIoU", "aAcc", "mAcc")}}
                for r in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir", type=Path, help="the sweep's --work-dir")
    p.add_argument("trial_ids", nargs="+", help="trial ids (the part after trial_)")
    p.add_argument("--out", type=Path, required=True, help="folder for the <id>.json records")
    args = p.parse_args(argv)

    from search.space import apply_params
    from segproto.config import config_from_dict
    from segproto.engine import Trainer

    base_file = args.sweep_dir / "sweep_base.yaml"
    base = yaml.safe_load(base_file.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for tid in args.trial_ids:
        record_file = args.out / f"{tid}.json"
        if record_file.exists():
            print(f"skip {tid}: {record_file} exists")
            continue
        trial_dir = args.sweep_dir / f"trial_{tid}"
        params = json.loads((trial_dir / "params.json").read_text())
        ckpt = last_checkpoint(trial_dir)
        cfg = config_from_dict(apply_params(base, params), f"{trial_dir}/params.json")
        work_dir = args.sweep_dir / "continued" / f"trial_{tid}"
        work_dir.mkdir(parents=True, exist_ok=True)
        if any(work_dir.glob("iter_*.pth")):
            resume: object = True  # an interrupted continuation: go on from its own last checkpoint
        else:  # a copy: the trainer's checkpoint rotation never touches the sweep's own files
            resume = shutil.copy2(ckpt, work_dir / f"start_{ckpt.name}")
        evals_file = work_dir / EVALS
        evals: list[dict] = []

        def on_eval(it: int, metrics: dict, _ckpt: object) -> None:
            evals.append({"iter": it, **dict(metrics)})
            tmp = evals_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(evals, indent=1) + "\n")
            tmp.replace(evals_file)

        start = time.time()
        trainer = Trainer(cfg, work_dir, resume=resume, force=False, on_eval=on_eval)
        if resume is True and evals_file.is_file():  # keep what earlier processes evaluated up to the resumed iteration
            evals.extend(e for e in json.loads(evals_file.read_text()) if e["iter"] <= trainer.start_iter)
        trainer.run()
        record = {"trial_id": tid, "params": params, "seed": cfg.seed, "train_iters": cfg.train.iters,
                  "continued_from": str(ckpt), "tune_history": tune_history(trial_dir),
                  "continuation": evals, "wall_s": round(time.time() - start, 1)}
        tmp = record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(record_file)
        final = evals[-1] if evals else {}
        print(f"done {tid}: mIoU {final.get('mIoU', float('nan')):.2f} at iteration {final.get('iter')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
