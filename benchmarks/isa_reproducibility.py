"""Does a seeded CPU training reproduce bitwise, on this machine and on a CPU with another instruction set?

    OMP_NUM_THREADS=1 python -m benchmarks.isa_reproducibility [--config configs/pretrained128/ce.yaml] [--iters 8]

Trains ``--iters`` iterations of the config three times, each in a fresh process and work dir:
twice as it is, and once with torch's CPU kernels held one instruction set lower
(``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA``: AVX-512 -> AVX2, AVX2 -> no vectorisation),
which is what the same run does on a CPU without this one's wider vector unit. Compares each
run's final checkpoint with the first one's, tensor by tensor (model weights and BatchNorm
statistics: how many differ, the largest absolute difference), and the training loss of the last
iteration. Prints the comparison and writes ``benchmarks/results/isa_reproducibility.json``.

Seed, config, data and thread count are the same in all three; only the kernels' instruction set
changes. It is why the study scripts keep the machine (``machine.json``) beside every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import machine, write_json

REPO = Path(__file__).resolve().parents[1]
# torch's CPU capability -> the environment that holds torch's and oneDNN's kernels one level lower
LOWER = {"AVX512": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
         "AVX2": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}}


def train(config: str, iters: int, work_dir: Path, env: dict[str, str]) -> dict:
    """Trains ``iters`` iterations into ``work_dir``; returns the final checkpoint's tensors, the last
    logged loss and the kernel set the run reported."""
    overrides = [f"train.iters={iters}", "train.log_interval=1", f"train.checkpoint_interval={iters}",
                 f"train.eval_interval={iters}", "train.progress_bar=false"]
    subprocess.run([sys.executable, "-m", "segproto.train", config, "--work-dir", str(work_dir), "--cfg-options",
                    *overrides], cwd=REPO, env={**os.environ, **env}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = torch.load(work_dir / f"iter_{iters}.pth", map_location="cpu", weights_only=False)["model"]
    records = [json.loads(ln) for ln in (work_dir / "scalars.jsonl").read_text().splitlines() if ln]
    loss = [r for r in records if r.get("mode") == "train"][-1]["loss"]
    kernels = next((ln for ln in (work_dir / "train.log").read_text().splitlines() if "torch CPU kernels" in ln), "")
    return {"state": state, "loss": loss, "machine_line": kernels.split("machine: ", 1)[-1]}


def compare(a: dict, b: dict) -> dict:
    """Tensors of ``b`` that differ from ``a``'s, and the largest absolute difference."""
    keys = [k for k in a["state"] if torch.is_tensor(a["state"][k])]
    differ = [k for k in keys if not torch.equal(a["state"][k], b["state"][k])]
    largest = max((float((a["state"][k].double() - b["state"][k].double()).abs().max()) for k in differ
                   if a["state"][k].is_floating_point()), default=0.0)
    return {"tensors": len(keys), "tensors_differing": len(differ), "max_abs_difference": largest,
            "loss": b["loss"], "loss_first_run": a["loss"], "machine_line": b["machine_line"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/pretrained128/ce.yaml")
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "isa_reproducibility.json"))
    a = p.parse_args(argv)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in LOWER:
        raise SystemExit(f"torch's CPU capability here is {capability!r}: no lower instruction set to compare with "
                         f"(this benchmark knows {sorted(LOWER)})")
    lower = LOWER[capability]
    with tempfile.TemporaryDirectory() as tmp:
        first = train(a.config, a.iters, Path(tmp) / "first", {})
        rows = {"same_machine_again": compare(first, train(a.config, a.iters, Path(tmp) / "again", {})),
                "lower_instruction_set": {**compare(first, train(a.config, a.iters, Path(tmp) / "lower", lower)),
                                          "env": lower}}
    for name, r in rows.items():
        print(f"{name:22s} {r['tensors_differing']:4d} of {r['tensors']} tensors differ (largest |diff| "
              f"{r['max_abs_difference']:.3g}); last loss {r['loss']:.8f} vs {r['loss_first_run']:.8f}")
    write_json(a.out, {"machine": machine(), "config": a.config, "iters": a.iters,
                       "threads": os.environ.get("OMP_NUM_THREADS"), "native_capability": capability,
                       "first_machine_line": first["machine_line"], "runs": rows})
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
