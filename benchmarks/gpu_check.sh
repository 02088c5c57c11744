#!/usr/bin/env bash
# The GPU check, for a lent CUDA machine that receives only this working tree (and the ignored folders
# carried with it), has no network and has PyTorch installed: cnnlab runs from the tree (PYTHONPATH, no pip
# install). From the repository root:
#     bash benchmarks/gpu_check.sh             # the log also goes to $OUT/gpu_check.log when OUT is set
#     bash benchmarks/gpu_check.sh --dry-run   # anywhere, no GPU: checks the staged files and each step's
#                                              # command (flags, test selection, sweep plan), runs nothing long
# Expected time on one H100: about 7 minutes, an estimate, not a measurement (no GPU has run this version):
# airbench94_muon trains in 2.6-3.5 s an A100 run as published; here each run is its own process (start,
# cached decode), the peer as published compiles in each (~1 min), the seed grid trains AlexNet at 256x256
# for 2 x 2 epochs, the CUDA tests compile once.
# Each step runs under `timeout`; the script stops at the first step that fails, naming it.
# Steps:
#   1. the CUDA tests (tests/test_train_syncs.py's test_cuda_*, no others): no synchronisation inside a
#      training step (torch.cuda.set_sync_debug_mode("error")), eager and torch.compile;
#   2. airbench94_muon (the peer) and cnnlab's fast94 side by side, 2 seeds interleaved, each run its own
#      process (benchmarks/vs_airbench.py --method full): on equal terms (one precision, neither compiled),
#      then with the peer as published (compiled); each run's time and its warm epochs' mean (those after the
#      first, which holds compilation, cuDNN's algorithm search and lazy loading), two decimals;
#   3. a short seed grid: the seed preset at batch 100 and 200, 1 seed, 2 epochs (cnnlab sweep), with each
#      run's epoch times, peak GPU memory and TF32 setting as its files record them;
#   4. the seed preset's training images/s (benchmarks/seed_throughput.py).
# What it needs beside the tree: stage it in .gpu/ (ignored by git) and carry .gpu with the tree:
#     mkdir -p .gpu/peers && cp ../shared/peers/airbench94_muon_cpu.py .gpu/peers/
# Looked for in this order (a ../shared beside a checkout does not travel to the device machine):
#   peer (required): $PEER, .gpu/peers/, shared/peers/, ../shared/peers/ airbench94_muon_cpu.py
#   dataset:         $CNNLAB_DATA, .gpu/cifar10, shared/datasets/cifar10, ../shared/datasets/cifar10
# CIFAR-10's image folders (218 MB) are larger than what travels to the device machine (64 MiB): without
# them, steps 2-4 run on a synthetic folder of the same shape (50,000 + 5,000 random 32x32 PNGs): the times
# are real, the accuracies chance, and the ratio is then of full-recipe training times, to be combined with
# accuracies measured on the real data elsewhere (README).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then exec > >(tee "$OUT/gpu_check.log") 2>&1; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export CNNLAB_CACHE="${CNNLAB_CACHE:-/tmp/cnnlab-cache}" TMPDIR="${TMPDIR:-/tmp}"
PY="${PYTHON:-python3}"
STEP="staged files"
trap 'echo "gpu_check: step \"$STEP\" FAILED (status $?)"' ERR

first() { for f in "$@"; do [ -n "$f" ] && [ -e "$f" ] && { echo "$f"; return 0; }; done; return 1; }
step() { STEP="$1"; echo "== $1"; }
run() {  # LIMIT_S COMMAND...: the command under a time limit; with --dry-run, printed instead
    local limit=$1; shift
    if [ "$DRY" = 1 ]; then printf 'would run (limit %s s):' "$limit"; printf ' %q' "$@"; echo; return 0; fi
    timeout "$limit" "$@"
}

echo "== staged files"
PEER=$(first "${PEER:-}" .gpu/peers/airbench94_muon_cpu.py shared/peers/airbench94_muon_cpu.py \
             ../shared/peers/airbench94_muon_cpu.py) \
    || { echo "missing: airbench94_muon_cpu.py (stage it: mkdir -p .gpu/peers && cp ../shared/peers/airbench94_muon_cpu.py .gpu/peers/, and carry .gpu)"; exit 1; }
DATA=$(first "${CNNLAB_DATA:-}" .gpu/cifar10 shared/datasets/cifar10 ../shared/datasets/cifar10) || DATA=""
for f in tests/test_train_syncs.py benchmarks/vs_airbench.py benchmarks/seed_throughput.py; do
    [ -e "$f" ] || { echo "missing: $f (the tree is incomplete)"; exit 1; }
done
echo "peer $PEER; data ${DATA:-(none: a synthetic folder)}"

step "machine"
if [ "$DRY" = 1 ]; then
    "$PY" -c "import torch, cnnlab; print('torch', torch.__version__, '| CUDA', torch.cuda.is_available(), '(dry run)')"
else
    timeout 60 "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, '|', torch.cuda.get_device_name(0), '| cuDNN', torch.backends.cudnn.version())"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
REV=$(git rev-parse --short HEAD 2>/dev/null) && { git diff --quiet HEAD || REV="$REV with uncommitted changes"; } || true
echo "cnnlab ${REV:-(no git here)}, $(nproc) cores"

step "1. the CUDA tests: no host synchronisation inside a training step"
CUDA_TESTS=(tests/test_train_syncs.py -k test_cuda_)
if [ "$DRY" = 1 ]; then  # the selection: the CUDA tests and only those
    "$PY" -m pytest -q -p no:cacheprovider --collect-only "${CUDA_TESTS[@]}" | grep "::" | tee "$TMPDIR/gpu_check_tests"
    if grep -qv "::test_cuda_" "$TMPDIR/gpu_check_tests" || [ ! -s "$TMPDIR/gpu_check_tests" ]; then
        echo "the selection is not the CUDA tests alone"; exit 1
    fi
fi
run 150 "$PY" -m pytest -q -rs -p no:cacheprovider "${CUDA_TESTS[@]}"

step "data"
SYNTHETIC=0
if [ -z "$DATA" ]; then
    SYNTHETIC=1
    PER_CLASS=5000
    [ "$DRY" = 1 ] && PER_CLASS=20  # a dry run checks the commands on a small folder of the same layout
    DATA="$TMPDIR/cifar10_synthetic_$PER_CLASS"
    echo "no CIFAR-10 folder here: a synthetic one of the same shape at $DATA (times real, accuracies chance)"
    timeout 90 "$PY" - "$DATA" "$PER_CLASS" <<'EOF'
import os, sys
from concurrent.futures import ProcessPoolExecutor
import numpy as np
from PIL import Image

root, per_class = sys.argv[1], int(sys.argv[2])
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write(job):
    split, k, count = job
    folder = os.path.join(root, split, CLASSES[k])
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng([k, split == "test"])
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i:05d}.png"))


if not os.path.isdir(os.path.join(root, "test")):
    jobs = [("train", k, per_class) for k in range(10)] + [("test", k, per_class // 10) for k in range(10)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(write, jobs))
print("synthetic folder ready")
EOF
fi

step "2. airbench94_muon vs cnnlab fast94, interleaved"
[ "$DRY" = 1 ] && "$PY" benchmarks/vs_airbench.py --help >/dev/null  # its flags as this script gives them
run 330 "$PY" benchmarks/vs_airbench.py --data "$DATA" --peer "$PEER" --method full --seeds 2 --as-published
[ "$SYNTHETIC" = 1 ] && echo "(synthetic data: the accuracies above are chance; the times are the recipes')"

step "3. a short seed grid: batch 100 and 200, 1 seed, 2 epochs"
GRID="$TMPDIR/gpu_check_seed_grid"
rm -rf "$GRID"
SWEEP=("$PY" -m cnnlab sweep --preset seed --data "$DATA" --grid batch_size=100,200 --seeds 1 --epochs 2
       --out "$GRID" --no-progress)
[ "$DRY" = 1 ] && "${SWEEP[@]}" --dry-run  # the plan: 2 cells x 1 seed
run 200 "${SWEEP[@]}"
[ "$DRY" = 1 ] || "$PY" - "$GRID" <<'EOF'
import glob, json, os, sys

for metrics_path in sorted(glob.glob(os.path.join(sys.argv[1], "runs", "*", "metrics.json"))):
    run = os.path.dirname(metrics_path)
    metrics = json.load(open(metrics_path))
    env = json.load(open(os.path.join(run, "config.json")))["environment"]
    history = json.load(open(os.path.join(run, "history.json")))
    epochs, accuracy = [r["time_s"] for r in history], history[-1].get("val_accuracy") or 0.0
    print(f"{os.path.basename(run)}: epochs {', '.join(f'{t:.2f}' for t in epochs)} s (warm: the ones after the "
          f"first); val accuracy {100 * accuracy:.2f}%; peak GPU memory {metrics.get('peak_gpu_memory_gb')} GB; "
          f"tf32 {env.get('tf32')}; cudnn.benchmark {env.get('cudnn_benchmark')}")
EOF

step "4. seed preset throughput"
[ "$DRY" = 1 ] && "$PY" benchmarks/seed_throughput.py --help >/dev/null
run 120 "$PY" benchmarks/seed_throughput.py --data "$DATA" --steps 30 --rounds 1
if [ "$DRY" = 1 ]; then echo "gpu_check: dry run done (nothing was timed)"; else echo "gpu_check: done"; fi
