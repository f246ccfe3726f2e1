#!/usr/bin/env bash
# One prepared pass on a machine with an NVIDIA GPU: build the extension for the visible GPU,
# run the CUDA op tests, then the benchmarks on CUDA. Every step is time-capped and independent
# of the ones after the build, so one failure still leaves the rest of the evidence.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Writes $OUT/run.log (everything printed but the compiler's output: $OUT/build.log) and the benchmarks' JSON files into $OUT. Uses the
# python3 on PATH with its own torch (it need not be our pinned version: the extension is built
# here against whatever torch is installed). Needs no ray/optuna (the sweep tests are not run).
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
export PYTHONUNBUFFERED=1 SEGPROTO_FORCE_CUDA=1 MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
# Some images put a wrapper compiler first (e.g. /opt/gcc/bin/g++ with its own -B library path);
# an extension linked by it carried a private copy of libstdc++'s stream code and segfaulted on the
# first error message it formatted (docs/benchmarks.md, "On an H200"). Prefer the system compiler.
if [ -z "${CXX:-}" ] && [ -x /usr/bin/g++ ]; then export CC=/usr/bin/gcc CXX=/usr/bin/g++; fi
step() { echo; echo "=== $* ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"

step "build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
rm -rf build segproto/_C*.so
timeout 270 python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 \
    || { grep -n -B2 -A8 "error" "$OUT/build.log" | head -80; echo "BUILD FAILED"; exit 1; }
python3 -c "import segproto.ops as o; print(o.build_info())"

step "CUDA tests"
# -n 8 (pytest-xdist, where installed): a test that kills its worker is reported and the rest go on.
XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
SEGPROTO_REQUIRE_EXT=1 timeout 150 python3 -m pytest -q -rs $XDIST -p no:cacheprovider tests/ops tests/test_evaluation.py

step "op benchmarks"
timeout 90 python3 -m benchmarks.ops --device cuda --out "$OUT/ops-cuda.json"

step "PiCo step overhead (quickstart model)"
timeout 120 python3 -m benchmarks.pico_overhead --device cuda --steps 30 --out "$OUT/pico_overhead_cuda.json"
timeout 150 python3 -m benchmarks.pico_overhead --device cuda --size paper --steps 5 --profile \
    --out "$OUT/pico_overhead_paper_cuda.json"

step "HDMNet matching memory (5-shot, COCO-20i sizes)"
timeout 150 python3 -m benchmarks.hdmnet_memory --device cuda --out "$OUT/hdmnet_memory_cuda.json"

step "PiCo quickstart training on the GPU (300 iterations)"
timeout 120 python3 -m segproto.train configs/pico/quickstart.yaml --work-dir /tmp/gpu_quickstart \
    --cfg-options train.iters=300 train.eval_interval=300 train.checkpoint_interval=300 train.progress_bar=false \
    | grep -v "^iter [0-9]*[1-9]0/"

step "PRCL sampler (Cityscapes sizes)"
timeout 90 python3 -m benchmarks.prcl_sampler --device cuda --repeats 3 --out "$OUT/prcl_sampler_cuda.json"

step "done"
