"""Checks that a restructuring changed nothing a seeded run computes: trains the command recorded in
``benchmarks/results/restructure_reproduction.json`` at the current tree and compares its metrics
and every logged scalar with the recorded run, to the last digit.

    python scripts/reproduce_check.py            # train, compare, print
    python scripts/reproduce_check.py --record   # also append the result to the file's "checks"

Exit status 0 when identical, 1 when any value differs (the differences are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "benchmarks" / "results" / "restructure_reproduction.json"


def _run(command: str, work_dir: Path) -> dict:
    env_part, _, cmd = command.partition(" python ")
    env = {**os.environ, **dict(kv.split("=", 1) for kv in env_part.split())}
    args = shlex.split(cmd)
    args[args.index("--cfg-options"):args.index("--cfg-options")] = ["--work-dir", str(work_dir)]
    subprocess.run([sys.executable, *args], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((work_dir / "metrics.json").read_text())
    scalars = [json.loads(line) for line in (work_dir / "scalars.jsonl").read_text().splitlines()]
    return {"metrics": {k: metrics[k] for k in ("aAcc", "mIoU", "mAcc", "IoU")},
            "scalars": scalars}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", action="store_true", help="append the result to the file's checks")
    a = ap.parse_args(argv)
    data = json.loads(RECORD.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        now = _run(data["command"], Path(tmp) / "run")
    ref = data["before"]
    diffs = [f"metrics.{k}: {ref['metrics'][k]} vs {now['metrics'][k]}"
             for k in now["metrics"] if ref["metrics"][k] != now["metrics"][k]]
    if len(ref["scalars"]) != len(now["scalars"]):
        diffs.append(f"logged rows: {len(ref['scalars'])} vs {len(now['scalars'])}")
    for a_row, b_row in zip(ref["scalars"], now["scalars"]):
        diffs += [f"iter {a_row.get('iter')} {k}: {a_row[k]} vs {b_row.get(k)}"
                  for k in a_row if k != "time" and a_row[k] != b_row.get(k)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    print(f"{commit}{' (modified tree)' if dirty else ''}: "
          + ("identical to " + ref["commit"] if not diffs else f"{len(diffs)} differences"))
    for d in diffs[:20]:
        print("  " + d)
    if a.record:
        data.setdefault("checks", []).append({"commit": commit, "modified_tree": dirty,
                                              "identical": not diffs, "differences": diffs[:20]})
        RECORD.write_text(json.dumps(data, indent=1) + "\n")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
