"""A benchmark's record: the figure it measured, the command, the machine, torch, the commit and the date,
written as benchmarks/records/NAME.json (the docs' figures are read from these files).

    from record import write_record
    write_record("seed_parity_exact", "loss, gradients and weights vs Keras", {"max_abs": ...})
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys

import torch

from cnnlab.files import write_atomic

RECORDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "records")
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # the ones that pick the kernels


def machine() -> dict:
    """The CPU's model name and the instruction-set flags relevant here, and the GPU if there is one."""
    cpu, flags = "?", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and cpu == "?":
                    cpu = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    load = [round(x, 1) for x in os.getloadavg()]  # 1, 5 and 15 minutes: above the cores, the timings are shared
    return {"cpu": cpu, "cores": os.cpu_count(), "flags": [f for f in FLAGS if f in flags], "gpu": gpu, "load": load}


def commit() -> str | None:
    """The short hash of the checkout the benchmark runs from, with '+dirty' when it has uncommitted changes."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            # a record written earlier in the same checkout is not a change to the code that measured
            [
                "git",
                "-C",
                here,
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
                ":(top,exclude)benchmarks/records",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def record(figure: str, results: dict, command: str | None = None) -> dict:
    return {
        "figure": figure,
        "command": command or " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        "machine": machine(),
        "torch": torch.__version__,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "results": results,
    }


def write_record(name: str, figure: str, results: dict, command: str | None = None, folder: str = RECORDS) -> str:
    """Writes records/NAME.json whole or not at all; returns its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.json")
    write_atomic(path, json.dumps(record(figure, results, command), indent=1) + "\n")
    return path
