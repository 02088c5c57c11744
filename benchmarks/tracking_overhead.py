"""What `--log tensorboard` costs: the fast preset trained with and without it, in one process,
interleaved (none, tensorboard, tensorboard, none, ...) so that a machine that speeds up or slows down
during the measurement weighs on both alike. Prints each run's wall time (the whole train_run: data
from the decode cache, training, validation, test, files, and the logger's writes), the medians and
their ratio (goal: under 1.02).

    python benchmarks/tracking_overhead.py --data ../shared/datasets/cifar10            # full size: ~4 x 9 min
    python benchmarks/tracking_overhead.py --data ../shared/datasets/cifar10 --subset 500 --epochs 2  # a check

Result: not yet measured at full size.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

from cnnlab import preset
from cnnlab.pipeline import load_data, train_run
from cnnlab.tracking import installed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("CNNLAB_DATA", "../shared/datasets/cifar10"))
    parser.add_argument("--pairs", type=int, default=2, help="runs of each mode (default 2)")
    parser.add_argument("--subset", type=int, default=0, help="images per split (0 = all)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs (0 = the preset's)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    args = parser.parse_args()
    if not installed("tensorboard"):
        sys.exit("needs the tensorboard package: pip install 'cnnlab[tensorboard]'")
    overrides = {"data": args.data, "subset": args.subset, "threads": args.threads, "progress": False}
    if args.epochs:
        overrides["epochs"] = args.epochs
    base = preset("fast", **overrides)
    load_data(base)  # the first read decodes and caches the images: outside the timings
    times: dict[str, list[float]] = {"none": [], "tensorboard": []}
    order = []
    for pair in range(args.pairs):
        order += ["none", "tensorboard"] if pair % 2 == 0 else ["tensorboard", "none"]
    with tempfile.TemporaryDirectory() as tmp:
        for k, log in enumerate(order):
            start = time.perf_counter()
            metrics = train_run(base.replace(log=log), os.path.join(tmp, f"{k}-{log}"))
            wall = time.perf_counter() - start
            times[log].append(wall)
            print(
                f"run {k + 1}/{len(order)} --log {log:<11}: {wall:7.1f} s wall, {metrics['train_time_s']:7.1f} s "
                f"in training steps, test accuracy {100 * metrics['test']['accuracy']:.2f}%",
                flush=True,
            )
    none, tb = statistics.median(times["none"]), statistics.median(times["tensorboard"])
    print(
        f"median wall: --log none {none:.1f} s, --log tensorboard {tb:.1f} s; ratio {tb / none:.4f} "
        f"({100 * (tb / none - 1):+.2f}%), {args.pairs} run(s) of each, {base.epochs} epochs, "
        f"subset {args.subset or 'all'}"
    )


if __name__ == "__main__":
    main()
