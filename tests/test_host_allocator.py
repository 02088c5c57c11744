"""CPU training keeps freed memory for the next step (device.tune_host_allocator): glibc's malloc otherwise
hands every large tensor back to the kernel when it is freed and faults it in, zeroed, page by page the
next time, each step of a training. Observed through the page faults of repeated allocations, in
fresh processes (the setting lasts a process's life)."""

import os
import subprocess
import sys

import pytest

from cnnlab.device import runs_on_glibc

pytestmark = pytest.mark.skipif(not runs_on_glibc(), reason="the setting is glibc's (mallopt)")

ROUNDS = 40
SCRIPT = f"""
import resource, torch
from cnnlab.device import tune_host_allocator
tuned = tune_host_allocator()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({ROUNDS}):
    torch.empty(16 * 2**20).fill_(1.0)  # 64 MB, freed at once, as a step's activations are
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(env_value: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "CNNLAB_MALLOC_TUNING"}
    if env_value is not None:
        env["CNNLAB_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True).stdout
    tuned, count = out.split()
    return tuned, int(count)


def test_freed_memory_is_kept_for_the_next_allocation_unless_turned_off():
    tuned, kept = faults(None)
    untuned, returned = faults("0")
    assert (tuned, untuned) == ("True", "False")
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert returned >= ROUNDS * pages * 0.9  # every allocation faulted in anew
    # the first allocations only (about 3 here, up to 6 on a loaded machine, where the kernel's own sampling
    # of pages adds faults over a longer run), then the same memory again
    assert kept * 4 <= returned
