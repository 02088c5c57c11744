"""`import cnnlab` leaves PyTorch's, NumPy's and the process's global settings as they were (checked in a fresh
interpreter: threads, default dtype, backend flags, random states, environment, warning filters)."""

import subprocess
import sys

CHECK = """
import os, random, warnings
import numpy as np, torch
def state():
    b = torch.backends
    return repr((sorted(os.environ.items()), torch.get_num_threads(), torch.get_num_interop_threads(),
                 torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(),
                 torch.get_float32_matmul_precision(), b.cudnn.benchmark, b.cudnn.deterministic, b.cudnn.allow_tf32,
                 b.cuda.matmul.allow_tf32, b.mkldnn.enabled, torch.is_grad_enabled(), torch.get_rng_state().tolist(),
                 np.random.get_state()[1].tolist(), random.getstate(), warnings.filters, np.geterr()))
before = state()
import cnnlab, cnnlab.cli, cnnlab.distributed, cnnlab.optim, cnnlab.models, cnnlab.device
assert state() == before, "import cnnlab changed global state"
"""


def test_import_cnnlab_changes_no_global_state():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
