"""What bf16 costs in accuracy and gains in time, per preset, on a CPU with bf16 units: the preset trained in
fp32 and in bf16 (`--precision`), seeds interleaved (fp32, bf16, fp32, ...) so a slow spell of the machine hits
both alike, each a `cnnlab train` process. Writes benchmarks/records/precision_<PRESET>.json: test accuracy per
precision (mean, 95% interval), the paired difference over the seeds (the same seed in both precisions), and
the training time ratio bf16 / fp32; docs/presets.md says what `--precision auto` chooses from it.

    python benchmarks/precision.py ../shared/datasets/cifar10 --preset fast --seeds 3 --runs ~/precision-runs
    python benchmarks/precision.py ../shared/datasets/cifar10 --preset fast94 --seeds 3 --runs ~/precision-runs

On a CPU without bf16 units (AVX2 only) bf16 is emulated, several times slower, and `auto` trains in fp32:
the script then stops with one line (`--anyway` measures regardless). --runs keeps the runs and makes it
resumable, as benchmarks/presets.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from presets import ensure_run, figures, run_name  # noqa: E402
from record import write_record  # noqa: E402

from cnnlab.device import cpu_has_bf16  # noqa: E402
from cnnlab.stats import format_interval, summarize  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def table(runs: dict[str, list[dict]]) -> dict:
    rows = []
    for precision in PRECISIONS:
        acc = summarize([r["test_accuracy"] for r in runs[precision]])
        time_s = summarize([r["train_time_s"] for r in runs[precision]])
        rows.append([precision, acc["n"], format_interval(acc), f"{time_s['mean']:.0f}"])
    diff = summarize([b["test_accuracy"] - a["test_accuracy"] for a, b in zip(runs["fp32"], runs["bf16"])])
    ratio = summarize([b["train_time_s"] / a["train_time_s"] for a, b in zip(runs["fp32"], runs["bf16"])])
    rows.append(["bf16 - fp32 (paired)", diff["n"], format_interval(diff), f"x {ratio['mean']:.2f}"])
    columns = ["precision", "seeds", "test accuracy % [95% CI]", "training s (last row: time ratio)"]
    return {"columns": columns, "rows": rows, "difference": diff, "time_ratio": ratio}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs", help="keep the runs in this folder (and reuse the complete ones found there)")
    parser.add_argument("--anyway", action="store_true", help="measure even where bf16 is emulated")
    args = parser.parse_args()
    if not cpu_has_bf16() and not args.anyway:
        print("this CPU has no bf16 units (bf16 would be emulated): run on one with AVX512_BF16 or AMX, or --anyway")
        return 2
    folder = args.runs or tempfile.mkdtemp(prefix="cnnlab-precision-")
    data = os.path.abspath(args.data)
    runs: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    for seed in range(args.seeds):
        for precision in PRECISIONS:
            overrides = [f"precision={precision}"]
            out = os.path.join(folder, run_name(args.preset, seed, overrides))
            runs[precision].append(figures(seed, ensure_run(data, args.preset, seed, out, overrides)))
            r = runs[precision][-1]
            print(f"{precision} seed {seed}: {100 * r['test_accuracy']:.2f}% in {r['train_time_s']:.0f} s", flush=True)
    t = table(runs)
    results = {
        "preset": args.preset,
        "runs": runs,
        "difference": t.pop("difference"),
        "time_ratio": t.pop("time_ratio"),
        "tables": {"fp32 vs bf16": t},
    }
    print(write_record(f"precision_{args.preset}", f"the {args.preset} preset in fp32 and in bf16", results))
    if not args.runs:
        subprocess.run(["rm", "-rf", folder], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
