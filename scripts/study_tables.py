"""Turns the study result files into the tables of docs/results.md.

    python scripts/study_tables.py            # rewrite every generated table in docs/results.md
    python scripts/study_tables.py --check    # exit 1 if a table differs from its result file
    python scripts/study_tables.py --print pretrained128_pico
    python scripts/study_tables.py --per-class pretrained128_pico pico_memory   # class IoU vs ce

Input: ``benchmarks/results/studies/<regime>_<study>.json`` (``{"study", "regime", "runs": [{"variant",
"seed", "config", "overrides", "metrics": {...}}]}``, written by ``scripts/study.py`` and
``scripts/fewshot.py``). In docs/results.md each generated table sits between
``<!-- study:<regime>_<study> -->`` and ``<!-- /study -->``; only those lines are rewritten. Sweep
records (``benchmarks/results/studies/sweeps/<name>.json``, ``scripts/sweep_record.py``) fill the blocks
between ``<!-- sweep:<name> -->`` and ``<!-- /sweep -->``: one row per trial, best first.

Per variant: mean ± sample std over its runs; against the study's ``ce`` variant, the paired
difference (same seed; for few-shot, same fold and seed) with its 95% t-interval
(mean ± t(0.975, n - 1) · sd / sqrt(n)). An interval that excludes 0 is marked with ``*``. Runs
scored on the test split (``test_metrics``, ``scripts/study.py test``) add test columns.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "benchmarks" / "results" / "studies"
DOC = REPO / "docs" / "results.md"
BLOCK = re.compile(r"(<!-- study:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /study -->)", re.S)
SWEEP_BLOCK = re.compile(r"(<!-- sweep:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /sweep -->)", re.S)

LEVELS = (("mIoU_fine", "fine mIoU"), ("mIoU_middle", "middle mIoU"), ("mIoU_coarse", "coarse mIoU"),
          ("aAcc", "aAcc"), ("mAcc", "mAcc"))
# held-out test split, where runs were scored on it (``scripts/study.py test``: ``test_metrics``)
TEST = (("test:mIoU_fine", "test fine mIoU"), ("test:mIoU_coarse", "test coarse mIoU"))
FEWSHOT = (("mIoU_1shot", "1-shot mIoU"), ("FB-IoU_1shot", "1-shot FB-IoU"), ("mIoU_5shot", "5-shot mIoU"),
           ("FB-IoU_5shot", "5-shot FB-IoU"))


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def mean_sd(values: list[float]) -> str:
    if not values:
        return ""
    m = statistics.fmean(values)
    return f"{m:.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")


def paired(diffs: list[float]) -> str:
    """``+0.42 [-0.10, +0.94]`` (95% t-interval; ``*`` when it excludes 0); one pair: the difference."""
    if not diffs:
        return ""
    m = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"{m:+.2f} (1 pair)"
    half = t975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    star = "*" if (m - half > 0 or m + half < 0) else ""
    return f"{m:+.2f} [{m - half:+.2f}, {m + half:+.2f}]{star}"


def _value(run: dict, key: str):
    source, _, key = key.rpartition(":")
    metrics = run.get("test_metrics" if source == "test" else "metrics", {})
    v = metrics.get(key)
    if v is None and key == "mIoU_fine":
        v = metrics.get("mIoU")
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _key(run: dict) -> tuple:
    return (run.get("fold"), run.get("seed"))


def table(data: dict) -> str:
    """The markdown table of one study file."""
    runs = data["runs"]
    fewshot = data["study"] == "hdmnet"
    metrics = FEWSHOT if fewshot else LEVELS + TEST
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    shown = [(k, title) for k, title in metrics if any(_value(r, k) is not None for r in runs)]
    base = "no_distill" if fewshot else "ce"
    base_runs = {_key(r): r for r in runs if r["variant"] == base}
    diff_keys = [k for k, _ in shown if k.rpartition(":")[2].startswith("mIoU")]
    head = ["variant", "runs", *(t for _, t in shown), *(f"Δ {t} vs {base}" for k, t in shown if k in diff_keys)]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        cells = [variant, str(len(mine))]
        cells += [mean_sd([v for r in mine if (v := _value(r, k)) is not None]) for k, _ in shown]
        for k in diff_keys:
            if variant == base:
                cells.append("")
                continue
            pairs = [_value(r, k) - _value(base_runs[_key(r)], k) for r in mine
                     if _key(r) in base_runs and _value(r, k) is not None and _value(base_runs[_key(r)], k) is not None]
            cells.append(paired(pairs))
        lines.append("| " + " | ".join(cells) + " |")
    floor_line = _prior_floor(runs) if fewshot else ""
    if floor_line:
        lines += ["", floor_line]
    return "\n".join(lines)


def _machine_key(run: dict) -> tuple | None:
    """The CPU and torch kernel set of the first machine a run's record names (None: not recorded)."""
    first = (run.get("machine") or [{}])[0]
    return (first.get("cpu"), first.get("torch_cpu_capability")) if first else None


def _prior_floor(runs: list[dict]) -> str:
    """Trained model minus the untrained prior floor of the same fold from the same machine (the
    floor of the stage one the run was trained on: each machine trained its own stage ones), per
    variant and shot count ('' without a floor or without a trained run of a floored fold)."""
    floor = {(r["fold"], _machine_key(r)): r for r in runs if r["variant"] == "prior_only"}
    own = [(r, floor.get((r["fold"], _machine_key(r)))) for r in runs if r["variant"] != "prior_only"]
    parts = []
    for variant in dict.fromkeys(r["variant"] for r, _ in own):
        for k in ("mIoU_1shot", "mIoU_5shot"):
            diffs = [_value(r, k) - _value(f, k) for r, f in own if r["variant"] == variant and f is not None]
            if diffs:
                parts.append(f"{variant} {k.split('_')[1]} {paired(diffs)}")
    if not parts:
        return ""
    return "Trained model minus the prior floor of its fold and machine (mIoU, 95% interval over fold x seed runs): " + \
        "; ".join(parts) + "."


def per_class(data: dict, variant: str) -> str:
    """Per-class IoU of ``variant`` against the baseline over the seeds both have: means and the
    mean paired difference, largest losses first."""
    base = "no_distill" if data["study"] == "hdmnet" else "ce"
    runs = {(r["variant"], _key(r)): r for r in data["runs"] if "IoU" in r["metrics"]}
    keys = sorted(k for v, k in runs if v == variant and (base, k) in runs)
    if not keys:
        raise SystemExit(f"error: no seed of {variant!r} and {base!r} both have per-class IoU")
    classes = runs[(variant, keys[0])]["metrics"]["classes"]
    rows = []
    for i, name in enumerate(classes):
        mine = [runs[(variant, k)]["metrics"]["IoU"][i] for k in keys]
        theirs = [runs[(base, k)]["metrics"]["IoU"][i] for k in keys]
        rows.append((statistics.fmean(a - b for a, b in zip(mine, theirs)), name, statistics.fmean(theirs),
                     statistics.fmean(mine)))
    lines = [f"| class | {base} IoU | {variant} IoU | Δ (mean of {len(keys)} paired runs) |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {b:.2f} | {m:.2f} | {d:+.2f} |" for d, name, b, m in sorted(rows)]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def trial_score(trial: dict) -> float | None:
    """A sweep trial's best validation mIoU over Tune's reports and, for a trial trained on after ASHA
    stopped it wrongly, its continuation's evaluations; None for a trial never evaluated."""
    scores = [r["mIoU"] for r in [*trial["reports"], *trial.get("continued", [])] if "mIoU" in r]
    return max(scores) if scores else None


def sweep_table(data: dict) -> str:
    """One row per trial (best validation mIoU first, unscored last) with its values of the swept keys
    and its validation mIoU at every evaluated iteration; the config's defaults on the first row."""
    keys = list(data["space"])
    iters = sorted({r["iter"] for t in data["trials"] for r in [*t["reports"], *t.get("continued", [])]
                    if "mIoU" in r})
    head = ["trial", "status", *(f"`{k.rpartition('.')[2]}`" for k in keys), *(f"mIoU @ {i}" for i in iters)]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2),
             "| " + " | ".join(["defaults", "", *(_fmt(data["defaults"][k]) for k in keys), *("" for _ in iters)])
             + " |"]
    order = sorted(data["trials"], key=lambda t: (trial_score(t) is None, -(trial_score(t) or 0.0), t["trial_id"]))
    for t in order:
        at = {r["iter"]: f"{r['mIoU']:.2f}" for r in t["reports"] if "mIoU" in r}
        at.update({r["iter"]: f"{r['mIoU']:.2f}†" for r in t.get("continued", []) if "mIoU" in r})
        name = f"**{t['trial_id']}**" if t["trial_id"] == data["best"] else t["trial_id"]
        lines.append("| " + " | ".join([name, t["status"], *(_fmt(t["params"].get(k, "")) for k in keys),
                                        *(at.get(i, "") for i in iters)]) + " |")
    if any(t.get("continued") for t in data["trials"]):
        lines += ["", "† trained on to the end outside Tune from the trial's last checkpoint "
                  "(`scripts/sweep_continue.py`), after ASHA stopped it wrongly."]
    return "\n".join(lines)


def load_sweep(name: str) -> dict:
    path = STUDIES / "sweeps" / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (write it with scripts/sweep_record.py)")
    return json.loads(path.read_text())


def _sweep_block(name: str) -> str:
    if not (STUDIES / "sweeps" / f"{name}.json").is_file():
        return f"No finished sweep yet (`benchmarks/results/studies/sweeps/{name}.json` does not exist)."
    return sweep_table(load_sweep(name))


def load(name: str) -> dict:
    path = STUDIES / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (studies: {sorted(p.stem for p in STUDIES.glob('*.json'))})")
    return json.loads(path.read_text())


def _block(name: str) -> str:
    if not (STUDIES / f"{name}.json").is_file():
        return f"No finished run yet (`benchmarks/results/studies/{name}.json` does not exist)."
    return table(load(name))


def render(doc: str) -> str:
    """``doc`` with every generated block replaced by the table of its result file."""
    doc = BLOCK.sub(lambda m: m.group(1) + _block(m.group("name")) + "\n" + m.group(4), doc)
    return SWEEP_BLOCK.sub(lambda m: m.group(1) + _sweep_block(m.group("name")) + "\n" + m.group(4), doc)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if docs/results.md is out of date")
    p.add_argument("--print", dest="name", help="print the table of one study file (<regime>_<study>)")
    p.add_argument("--sweep", help="print the table of one sweep record (benchmarks/results/studies/sweeps/NAME.json)")
    p.add_argument("--per-class", nargs=2, metavar=("STUDY", "VARIANT"),
                   help="print a variant's per-class IoU against the baseline (<regime>_<study> VARIANT)")
    a = p.parse_args(argv)
    if a.per_class:
        print(per_class(load(a.per_class[0]), a.per_class[1]))
        return 0
    if a.sweep:
        print(sweep_table(load_sweep(a.sweep)))
        return 0
    if a.name:
        print(table(load(a.name)))
        return 0
    doc = DOC.read_text()
    new = render(doc)
    if a.check:
        if new != doc:
            print(f"error: {DOC} has tables that differ from benchmarks/results/studies; "
                  f"run python scripts/study_tables.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"{DOC}: {len(BLOCK.findall(new))} study tables, {len(SWEEP_BLOCK.findall(new))} sweep tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
