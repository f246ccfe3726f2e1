#!/usr/bin/env bash
# PiCo ablation on the quickstart budget (docs/results.md): variants x seeds, then a summary table.
# VARIANTS="..." picks a subset (default: all six).
#   bash scripts/pico_ablation.sh [SEEDS...]      (default seeds: 0 1 2; finished runs are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${*:-0 1 2}
declare -A CFG=(
  [ce]="configs/quickstart.yaml"
  [pico_batch]="configs/pico/quickstart.yaml --cfg-options loss.contrast.memory=false"
  [pico_memory]="configs/pico/quickstart.yaml"
  [pico_hardest]="configs/pico/quickstart.yaml --cfg-options loss.contrast.sampling=hardest loss.contrast.hard_k=256"
  [pico_semi_hard]="configs/pico/quickstart.yaml --cfg-options loss.contrast.sampling=semi_hard loss.contrast.hard_k=256"
  [pico_synthesis]="configs/pico/quickstart.yaml --cfg-options loss.contrast.sampling=hardest loss.contrast.hard_k=256 loss.contrast.synth_neg_neg=64 loss.contrast.synth_neg_anchor=64"
)
VARIANTS=${VARIANTS:-ce pico_batch pico_memory pico_hardest pico_semi_hard pico_synthesis}
for seed in $SEEDS; do
  for v in $VARIANTS; do
    wd=work_dirs/ablation/${v}_s${seed}
    [ -f "$wd/metrics.json" ] && continue
    # shellcheck disable=SC2086
    $PY -m segproto.train ${CFG[$v]} --work-dir "$wd" --opts seed=$seed train.progress_bar=false > /dev/null
  done
done
$PY - <<'PYEOF'
import json, pathlib, statistics as st
rows = {}
for m in sorted(pathlib.Path("work_dirs/ablation").glob("*_s*/metrics.json")):
    v = m.parent.name.rsplit("_s", 1)[0]
    d = json.loads(m.read_text())
    rows.setdefault(v, []).append((d["mIoU"], d["levels"]["coarse"]["mIoU"]))
print("| variant | seeds | fine mIoU (mean ± std) | coarse mIoU (mean ± std) |")
print("|---|---:|---:|---:|")
for v in ("ce", "pico_batch", "pico_memory", "pico_hardest", "pico_semi_hard", "pico_synthesis"):
    r = rows.get(v, [])
    if not r:
        continue
    f, c = [x[0] for x in r], [x[1] for x in r]
    sd = lambda xs: st.stdev(xs) if len(xs) > 1 else float("nan")
    print(f"| {v} | {len(r)} | {st.mean(f):.2f} ± {sd(f):.2f} | {st.mean(c):.2f} ± {sd(c):.2f} |")
PYEOF
