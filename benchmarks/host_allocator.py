"""cnnlab's CPU training with glibc malloc as it is (CNNLAB_MALLOC_TUNING=0) and with freed memory kept for
the next step (the default: cnnlab.device.tune_host_allocator), interleaved, each run in its own process.

    python benchmarks/host_allocator.py [--data DIR] [--preset fast94] [--steps-per-epoch 1] [--epochs 3]
                                        [--rounds 3]

Each run trains the preset for --epochs epochs on a subset of steps_per_epoch x batch_size training images
(symlinks to the first files of each class) and prints its seconds per step over the epochs after the first
(the first holds one-time set-up), its minor page faults and its peak resident memory (the process's own,
from wait4). Last line: the median seconds per step of each and their ratio.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from vs_airbench import ROOT, class_dirs, subset_folder

sys.path.insert(0, ROOT)
from cnnlab.presets import preset  # noqa: E402  (cnnlab from this checkout)


def run(python: str, data: str, preset_name: str, epochs: int, out: str, env: dict) -> dict:
    cmd = [
        python,
        "-m",
        "cnnlab",
        "train",
        "--preset",
        preset_name,
        "--data",
        data,
        "--epochs",
        str(epochs),
        "--no-adapt",
        "--val-fraction",
        "0",
        "--no-progress",
        "--log",
        "none",
        "--checkpoint-every",
        "0",
        "--out",
        out,
    ]
    with open(out + ".log", "w+") as log:  # a file, not a pipe: a full pipe would stall the child before wait4
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = status  # reaped here: Popen must not wait for it again
        log.seek(0)
        if status:
            sys.exit(f"failed: {' '.join(cmd)}\n{log.read()[-4000:]}")
    with open(os.path.join(out, "history.json")) as fh:
        history = json.load(fh)
    return {"epoch_s": [r["time_s"] for r in history], "faults": usage.ru_minflt, "rss_gb": usage.ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=os.environ.get("CNNLAB_DATA", os.path.join(ROOT, "..", "shared", "datasets", "cifar10"))
    )
    parser.add_argument("--preset", default="fast94")
    parser.add_argument("--steps-per-epoch", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batch = preset(args.preset).batch_size
    with tempfile.TemporaryDirectory() as tmp:
        sub = os.path.join(tmp, "subset")
        n_classes = len(class_dirs(os.path.join(args.data, "train")))
        n_sub = subset_folder(args.data, sub, -(-args.steps_per_epoch * batch // n_classes), 10)
        steps = n_sub // batch
        base = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
            "TMPDIR": tmp,
            "CNNLAB_CACHE": os.path.join(tmp, "cache"),
        }
        print(
            f"{args.preset}: {n_sub} training images, {steps} step(s) of {batch} per epoch, {args.epochs} epochs; "
            f"{os.cpu_count()} cores",
            flush=True,
        )
        per_step: dict[str, list[float]] = {"malloc as it is": [], "freed memory kept": []}
        for round_ in range(args.rounds):
            for label, value in (("malloc as it is", "0"), ("freed memory kept", "1")):
                result = run(
                    sys.executable,
                    sub,
                    args.preset,
                    args.epochs,
                    os.path.join(tmp, f"{round_}-{value}"),
                    {**base, "CNNLAB_MALLOC_TUNING": value},
                )
                later = result["epoch_s"][1:] or result["epoch_s"]
                per_step[label].append(statistics.mean(later) / steps)
                print(
                    f"round {round_} {label}: {per_step[label][-1]:.2f} s/step, {result['faults']:,} minor page "
                    f"faults, peak RSS {result['rss_gb']:.2f} GB",
                    flush=True,
                )
    before, after = (statistics.median(v) for v in per_step.values())
    print(f"median s/step: malloc as it is {before:.2f}, freed memory kept {after:.2f}: {before / after:.2f}x")


if __name__ == "__main__":
    main()
