#!/usr/bin/env bash
# The GPU check, prepared for a lent CUDA machine (one H200 here); about 5 minutes.
# Run it from the repository root, with the dataset at $CNNLAB_DATA (copy it into the repository first
# if the machine only receives the working tree):
#     bash benchmarks/gpu_check.sh 2>&1 | tee gpu_check.log
# It prints: time to 94% for the airbench-width network on the GPU (3 seeds, all 50,000 training
# images, bf16 autocast), the fast preset likewise, and the seed preset's training images/s.
set -euo pipefail
export CNNLAB_DATA="${CNNLAB_DATA:-../shared/datasets/cifar10}"
export PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
python3 -m pip install -q --no-deps -e . 2>/dev/null || python3 -m pip install -q -e .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 150 python3 benchmarks/time_to_accuracy.py --seeds 3 --model fastnet_wide --epochs 10 --val-fraction 0 --targets 0.8191,0.90,0.94
timeout 60 python3 benchmarks/time_to_accuracy.py --seeds 3 --val-fraction 0 --targets 0.8191,0.85,0.90
timeout 60 python3 benchmarks/seed_throughput.py --steps 30
