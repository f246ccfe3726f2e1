"""Keeps a finished Ray Tune sweep as a committed result file (the sweep's work dir is not committed).

    python scripts/sweep_record.py work_dirs/sweep_pretrained128_pico --name pretrained128_pico \\
        --command "python search/sweep.py configs/pretrained128/pico.yaml --space ..."

Reads what ``search/sweep.py`` leaves in its work dir: ``results.csv`` (status of every trial),
``sweep_space.yaml``, ``sweep_base.yaml`` (the defaults of the swept keys) and each trial's
``trial_<id>/result.json`` (one report per evaluation). Needs no Ray. Writes
``benchmarks/results/studies/sweeps/<name>.json``::

    {"sweep", "command", "commit", "space", "defaults", "best", "best_tune",
     "trials": [{"trial_id", "status", "params", "best_mIoU", "best_iter",
                 "reports": [{"iter", "mIoU", "aAcc", "mAcc", "time_total_s", "timestamp"}],
                 "continued": [{"iter", "mIoU", "aAcc", "mAcc"}]}]}

``--continued DIR`` adds the evaluations of early-stopped trials that ``scripts/sweep_continue.py``
trained on to the end (its ``<id>.json`` records): such a trial stands for what it would have
scored had ASHA not stopped it wrongly, so ``best`` is the best trial over Tune's reports and those
evaluations, ``best_tune`` the best over Tune's reports alone (they differ only when a continued
trial overtakes). ``continued`` is empty for the other trials.

``scripts/study_tables.py`` turns it into the ``<!-- sweep:<name> -->`` table of docs/results.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

from segproto.config import get_by_dotted

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import git_commit  # noqa: E402
from study_tables import trial_score  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "benchmarks" / "results" / "studies" / "sweeps"
REPORT_KEYS = ("iter", "mIoU", "aAcc", "mAcc", "time_total_s", "timestamp")


def _reports(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"error: {path} line {n}: not JSON ({exc.msg})") from exc
        out.append({k: r[k] for k in REPORT_KEYS if k in r})
    return sorted(out, key=lambda r: r.get("iter", 0))


def _continued(folder: Path | None) -> dict[str, list[dict]]:
    """Trial id -> the evaluations of its ``scripts/sweep_continue.py`` record in ``folder``."""
    if folder is None:
        return {}
    files = sorted(folder.glob("*.json"))
    if not files:
        raise SystemExit(f"error: --continued {folder}: no <trial id>.json records of scripts/sweep_continue.py")
    return {f.stem: [{k: r[k] for k in REPORT_KEYS if k in r} for r in json.loads(f.read_text())["continuation"]]
            for f in files}


def build(work_dir: Path, name: str, command: str, continued_dir: Path | None = None) -> dict:
    """The record of the sweep in ``work_dir`` (``SystemExit`` naming the missing file if any)."""
    need = [work_dir / f for f in ("results.csv", "sweep_space.yaml", "sweep_base.yaml")]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} not found: is {work_dir} a finished search/sweep.py "
                         f"work dir? (results.csv is written when the sweep ends)")
    space = yaml.safe_load(need[1].read_text())
    base = yaml.safe_load(need[2].read_text())
    continued = _continued(continued_dir)
    trials = []
    with open(need[0], newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            tid = row["trial_id"]
            params_file = work_dir / f"trial_{tid}" / "params.json"
            params = json.loads(params_file.read_text()) if params_file.is_file() else \
                {k: row[k] for k in space}
            reports = _reports(work_dir / f"trial_{tid}" / "result.json")
            trials.append({"trial_id": tid, "status": row["status"], "params": params,
                           "best_mIoU": float(row["best_mIoU"]) if row["best_mIoU"] else None,
                           "best_iter": int(row["best_iter"]), "reports": reports,
                           "continued": continued.pop(tid, [])})
    if continued:
        raise SystemExit(f"error: --continued {continued_dir}: {', '.join(sorted(continued))} not trials of {work_dir}")
    scored = [t for t in trials if t["best_mIoU"] is not None]
    best_tune = max(scored, key=lambda t: t["best_mIoU"])["trial_id"] if scored else None
    overall = [(trial_score(t), t["trial_id"]) for t in scored if trial_score(t) is not None]
    best = max(overall)[1] if overall else None
    return {"sweep": name, "command": command, "commit": git_commit(work_dir), "space": space,
            "defaults": {k: get_by_dotted(base, k) for k in space}, "best": best, "best_tune": best_tune,
            "trials": trials}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work_dir", type=Path, help="the sweep's --work-dir")
    p.add_argument("--name", required=True, help="record name, <regime>_<method> (e.g. pretrained128_pico)")
    p.add_argument("--command", required=True, help="the sweep command line, kept in the record")
    p.add_argument("--continued", type=Path,
                   help="records of scripts/sweep_continue.py for trials ASHA stopped wrongly (their <id>.json)")
    a = p.parse_args(argv)
    record = build(a.work_dir.resolve(), a.name, a.command, a.continued)
    SWEEPS.mkdir(parents=True, exist_ok=True)
    out = SWEEPS / f"{a.name}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out)
    print(f"{out}: {len(record['trials'])} trials, best {record['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
