"""What a preset gives on the machine at hand: trains it on CIFAR-10 over several seeds (each a `cnnlab train`
process, as a user runs it) and adds its entry to benchmarks/records/presets.json: the test accuracy's mean, std and
95% interval, the training time, the peak memory, and the machine (CPU model and flags, the precision `auto`
chose, threads, torch); the record's table has a row per preset measured. README's presets table and docs/presets.md are generated from these records.

    python benchmarks/presets.py ../shared/datasets/cifar10 --preset fast --seeds 5 --runs ~/preset-runs
    python benchmarks/presets.py ../shared/datasets/cifar10 --preset fast94 --seeds 3 --runs ~/preset-runs

--runs keeps the runs (default: a temporary folder, deleted) and makes the benchmark resumable: a seed whose
run there is complete is read, not trained again (its commit is in its config.json and in the record), and one
that was stopped (Ctrl-C or SIGTERM leave a checkpoint) is resumed (`cnnlab train --resume`; its training time
leaves out the pause), so an interrupted benchmark goes on where it stopped. `--set KEY=VALUE` passes a config
override to every run (its runs are kept apart: <preset>-<key>-<value>-<seed>).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import RECORDS, write_record  # noqa: E402

from cnnlab import runs  # noqa: E402
from cnnlab.stats import summarize  # noqa: E402


def run_name(preset: str, seed: int, overrides: list[str]) -> str:
    tags = [o.replace("=", "-") for o in overrides]
    return "-".join([preset, *tags, str(seed)])


def flag(override: str) -> list[str]:
    """`key=value` as `cnnlab train`'s flag: `--key value`, or `--key` / `--no-key` for true / false."""
    key, _, value = override.partition("=")
    name = key.replace("_", "-")
    if value.lower() in ("true", "false"):
        return [f"--{name}" if value.lower() == "true" else f"--no-{name}"]
    return [f"--{name}", value]


def ensure_run(data: str, preset: str, seed: int, out: str, overrides: list[str] = ()) -> dict:
    """The run `out` (trained now unless complete already): its metrics.json and config.json."""
    if os.path.exists(os.path.join(out, runs.CHECKPOINT)) and not runs.is_complete(out):  # stopped: go on
        subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", out], check=True)
    elif not runs.is_complete(out):
        command = [sys.executable, "-m", "cnnlab", "train", "--data", data, "--preset", preset, "--seed", str(seed)]
        for override in overrides:
            command += flag(override)
        subprocess.run([*command, "--out", out, "--log", "none", "--no-progress"], check=True)
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    with open(os.path.join(out, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    return {"metrics": metrics, "config": config}


def figures(seed: int, run: dict) -> dict:
    metrics, config = run["metrics"], run["config"]
    test, data, env = metrics["test"], config["data"], config["environment"]
    return {
        "seed": seed,
        "test_accuracy": test["accuracy"],
        "test_balanced_accuracy": test.get("balanced_accuracy"),
        "test_images": data["sizes"]["test"],
        "train_images": data["sizes"]["training"],
        "epochs_run": metrics["epochs_run"],
        "train_time_s": metrics["train_time_s"],
        "peak_memory_gb": metrics.get("peak_memory_gb"),
        "precision": "bf16" if data["bf16"] else "fp32",
        "threads": env["threads"],
        "commit": env["git_commit"],
    }


def summary(runs: list[dict]) -> dict:
    keys = ("test_accuracy", "test_balanced_accuracy", "train_time_s", "peak_memory_gb")
    return {k: summarize([r[k] for r in runs if r[k] is not None]) for k in keys}


COLUMNS = ["preset", "seeds", "test accuracy % (mean ± std [95% CI])", "training s (fastest / mean)", "peak GB"]
COLUMNS.append("precision")


def row(name: str, runs: list[dict], s: dict) -> list:
    acc = s["test_accuracy"]
    interval = (
        f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} [{100 * acc['ci_low']:.2f}, {100 * acc['ci_high']:.2f}]"
        if acc["std"] is not None
        else f"{100 * acc['mean']:.2f}"
    )
    return [
        name,
        len(runs),
        interval,
        f"{min(r['train_time_s'] for r in runs):.0f} / {s['train_time_s']['mean']:.0f}",
        f"{s['peak_memory_gb']['mean']:.2f}" if s["peak_memory_gb"]["n"] else "-",
        "/".join(sorted({r["precision"] for r in runs})),
        f"{runs[0]['test_images']:,}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--runs", help="keep the runs in this folder (and reuse the complete ones found there)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    args = parser.parse_args()
    folder = args.runs or tempfile.mkdtemp(prefix="cnnlab-presets-")
    data = os.path.abspath(args.data)
    runs = []
    for seed in range(args.seeds):
        out = os.path.join(folder, run_name(args.preset, seed, args.set))
        runs.append(figures(seed, ensure_run(data, args.preset, seed, out, args.set)))
        r = runs[-1]
        print(f"{args.preset} seed {seed}: {100 * r['test_accuracy']:.2f}% in {r['train_time_s']:.0f} s", flush=True)
    s = summary(runs)
    name = " ".join([args.preset, *args.set])
    path = os.path.join(RECORDS, "presets.json")
    presets = json.load(open(path))["results"]["presets"] if os.path.exists(path) else {}
    presets[name] = {"command": " ".join(sys.argv), "runs": runs, "summary": s}
    rows = [row(n, entry["runs"], entry["summary"]) for n, entry in presets.items()]
    table = {"columns": [*COLUMNS, "test images"], "rows": rows}
    results = {"presets": presets, "tables": {"CIFAR-10 test accuracy by preset": table}}
    commands = "; ".join(f"python {entry['command']}" for entry in presets.values())  # each preset's own
    print(write_record("presets", "the presets on CIFAR-10 over seeds", results, command=commands))
    if not args.runs:
        subprocess.run(["rm", "-rf", folder], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
