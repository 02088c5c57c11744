#!/usr/bin/env bash
# The GPU check, for a lent CUDA machine (one H200 here) that receives only this working tree, has no
# network and has PyTorch installed: cnnlab runs from the tree (PYTHONPATH, no pip install). Under 9 minutes
# (each step under `timeout`). From the repository root:
#     bash benchmarks/gpu_check.sh            # the log also goes to $OUT/gpu_check.log when OUT is set
# Steps:
#   1. the CUDA tests of the training loop: no synchronisation inside a training step
#      (torch.cuda.set_sync_debug_mode("error"), tests/test_train_syncs.py), eager and torch.compile;
#   2. airbench94_muon (the peer) and cnnlab's fast94 preset side by side: benchmarks/vs_airbench.py
#      --method full, 3 seeds interleaved (peer, cnnlab, peer, ...; each run in its own process): each
#      run's training seconds and test accuracy, and as its last line the ratio of the mean times;
#   3. the seed preset's training images/s (benchmarks/seed_throughput.py).
# What it needs beside the tree, looked for in this order (the ../shared beside a checkout does not travel
# to the device machine; copy into an ignored folder of the repository, e.g. .gpu/, and carry it):
#   peer:    $PEER, shared/peers/, .gpu/peers/, ../shared/peers/ airbench94_muon_cpu.py
#   dataset: $CNNLAB_DATA, shared/datasets/cifar10, .gpu/cifar10, ../shared/datasets/cifar10
# CIFAR-10's image folders (218 MB) are larger than what travels to the device machine (64 MiB): without
# them, step 2 runs on a synthetic folder of the same shape (50,000 + 5,000 random 32x32 PNGs): the times
# are real, the accuracies chance, and the ratio is then of full-recipe training times, to be combined with
# accuracies measured on the real data elsewhere (README).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then exec > >(tee "$OUT/gpu_check.log") 2>&1; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export CNNLAB_CACHE="${CNNLAB_CACHE:-/tmp/cnnlab-cache}" TMPDIR="${TMPDIR:-/tmp}"
PY="${PYTHON:-python3}"

first() { for f in "$@"; do [ -n "$f" ] && [ -e "$f" ] && { echo "$f"; return 0; }; done; return 1; }
PEER=$(first "${PEER:-}" shared/peers/airbench94_muon_cpu.py .gpu/peers/airbench94_muon_cpu.py \
             ../shared/peers/airbench94_muon_cpu.py) || PEER=""
DATA=$(first "${CNNLAB_DATA:-}" shared/datasets/cifar10 .gpu/cifar10 ../shared/datasets/cifar10) || DATA=""

echo "== machine"
timeout 30 "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, '|', torch.cuda.get_device_name(0), '| cuDNN', torch.backends.cudnn.version())" \
    || { echo "error: no CUDA device seen by $PY; this check is for a GPU machine"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
REV=$(git rev-parse --short HEAD 2>/dev/null) && { git diff --quiet HEAD || REV="$REV with uncommitted changes"; }
echo "cnnlab ${REV:-(no git here)}, $(nproc) cores"

echo "== 1. no host synchronisation inside a training step (CUDA tests)"
timeout 100 "$PY" -m pytest -q -p no:cacheprovider tests/test_train_syncs.py -k "cuda or compile" \
    || echo "step 1 FAILED or timed out (status $?)"

echo "== 2. airbench94_muon vs cnnlab fast94, interleaved"
SYNTHETIC=0
if [ -z "$DATA" ]; then
    SYNTHETIC=1
    DATA="$TMPDIR/cifar10_synthetic"
    echo "no CIFAR-10 folder here: a synthetic one of the same shape at $DATA (times real, accuracies chance)"
    timeout 45 "$PY" - "$DATA" <<'EOF' || echo "synthetic folder: FAILED or timed out"
import os, sys
from concurrent.futures import ProcessPoolExecutor
import numpy as np
from PIL import Image

root = sys.argv[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write(job):
    split, k, count = job
    folder = os.path.join(root, split, CLASSES[k])
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng([k, split == "test"])
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i:05d}.png"))


if not os.path.isdir(os.path.join(root, "test")):
    jobs = [("train", k, 5000) for k in range(10)] + [("test", k, 500) for k in range(10)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(write, jobs))
print("synthetic folder ready")
EOF
fi
if [ -z "$PEER" ]; then
    echo "step 2 SKIPPED: airbench94_muon_cpu.py not found"
    echo "  (copy ../shared/peers/airbench94_muon_cpu.py into .gpu/peers/ and carry .gpu)"
else
    # benchmarks/vs_airbench.py runs the peer from ../shared/peers: put it there on a machine that lacks it
    if [ ! -e ../shared/peers/airbench94_muon_cpu.py ]; then
        mkdir -p ../shared/peers && cp "$PEER" ../shared/peers/
    fi
    timeout 280 "$PY" benchmarks/vs_airbench.py --data "$DATA" --method full --seeds 3 \
        || echo "step 2 FAILED or timed out (status $?)"
    [ "$SYNTHETIC" = 1 ] && echo "(synthetic data: the accuracies above are chance; the times are the recipes')"
fi

echo "== 3. seed preset throughput"
timeout 50 "$PY" benchmarks/seed_throughput.py --data "$DATA" --steps 30 --rounds 1 \
    || echo "step 3 FAILED or timed out (status $?)"
