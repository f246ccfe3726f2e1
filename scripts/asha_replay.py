"""Replays ASHA by hand on a sweep record: which trials an uninterrupted sweep would have stopped.

    python scripts/asha_replay.py benchmarks/results/studies/sweeps/pretrained128_pico.json \
        --grace-period 1000 --reduction-factor 2 --max-t 1500

Takes every trial's reports from the record (``scripts/sweep_record.py``; needs their
``timestamp``), and goes through the rung reports in time order as Ray's ASHA does without a
resume: a trial's score at a rung is its first report at or past the milestone, and it is stopped
when that score is below the ``1 - 1/rf`` quantile of the scores recorded at the rung before it.
Prints one row per trial: its rung scores, the replayed decision and the status the sweep gave it;
``differs`` marks the trials a resume changed (docs/sweeps.md, "Interrupt and resume").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np


def milestones(grace: int, rf: float, max_t: int) -> list[int]:
    """ASHA's rung milestones, lowest first (Ray's ``_Bracket`` with ``s = 0``)."""
    n = int(math.log(max_t / grace) / math.log(rf) + 1)
    return [int(grace * rf ** k) for k in range(n)]


def replay(trials: list[dict], rungs: list[int], rf: float) -> dict[str, dict]:
    """``trial_id -> {"scores": {milestone: mIoU}, "stopped_at": milestone or None}`` of an
    uninterrupted ASHA over the trials' reports (each ``{"iter", "mIoU", "timestamp"}``)."""
    events = []
    for t in trials:
        reports = sorted((r for r in t["reports"] if "mIoU" in r), key=lambda r: r["timestamp"])
        for m in rungs:
            first = next((r for r in reports if r["iter"] >= m), None)
            if first is not None:
                events.append((first["timestamp"], m, t["trial_id"], first["mIoU"]))
    out = {t["trial_id"]: {"scores": {}, "stopped_at": None} for t in trials}
    recorded: dict[int, list[float]] = {m: [] for m in rungs}
    for _, m, tid, score in sorted(events):
        if out[tid]["stopped_at"] is not None:
            continue  # a stopped trial reports nothing further in an uninterrupted sweep
        seen = recorded[m]
        if seen and score < float(np.nanpercentile(seen, (1 - 1 / rf) * 100)):
            out[tid]["stopped_at"] = m
        seen.append(score)
        out[tid]["scores"][m] = score
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("record", type=Path, help="benchmarks/results/studies/sweeps/<name>.json")
    p.add_argument("--grace-period", type=int, required=True)
    p.add_argument("--reduction-factor", type=float, default=2)
    p.add_argument("--max-t", type=int, required=True, help="train.iters of the sweep's trials")
    a = p.parse_args(argv)
    data = json.loads(a.record.read_text())
    missing = [t["trial_id"] for t in data["trials"] if any("timestamp" not in r for r in t["reports"])]
    if missing:
        raise SystemExit(f"error: {a.record}: reports without a timestamp (trials {', '.join(missing)}); "
                         "write the record again with scripts/sweep_record.py")
    rungs = milestones(a.grace_period, a.reduction_factor, a.max_t)
    result = replay(data["trials"], rungs, a.reduction_factor)
    print("| trial | " + " | ".join(f"mIoU @ {m}" for m in rungs) + " | uninterrupted ASHA | sweep | |")
    print("|---|" + "---:|" * len(rungs) + "---|---|---|")
    for t in data["trials"]:
        r = result[t["trial_id"]]
        decision = f"stopped at {r['stopped_at']}" if r["stopped_at"] is not None else "continued"
        want = "early_stopped" if r["stopped_at"] is not None else "completed"
        flag = "differs" if t["status"] in ("early_stopped", "completed") and t["status"] != want else ""
        print(f"| {t['trial_id']} | " + " | ".join(f"{r['scores'][m]:.2f}" if m in r["scores"] else ""
                                                   for m in rungs) + f" | {decision} | {t['status']} | {flag} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
