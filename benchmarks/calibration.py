"""Are cnnlab's probabilities calibrated? Trains a preset on CIFAR-10 over several seeds (each a `cnnlab
train` process, its default validation split held out of the training folder) and reads from each run's
metrics.json the test split's expected calibration error (15 bins), negative log-likelihood and Brier score,
raw and with the temperature fitted on validation, beside the test accuracy (which the temperature cannot
change).

    python benchmarks/calibration.py ../shared/datasets/cifar10 --preset fast --seeds 3
    python benchmarks/calibration.py ../shared/datasets/cifar10 --preset fast94 --seeds 1

Each call adds or replaces its preset's rows in benchmarks/records/calibration.json; runs go to a temporary
folder and are deleted (--keep DIR keeps them, and a complete run found there is read, not trained again:
benchmarks/presets.py's runs serve both). Beside each ECE, its floor: what a perfectly calibrated model with the
same confidences would score on as many images (cnnlab.calibration.sampling_floor). `--set KEY=VALUE` passes a
config override (fast94 trains on all 50,000 images: `--set val_fraction=0.1` holds out the validation split its
temperature is fitted on).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from presets import ensure_run, run_name  # noqa: E402
from record import RECORDS, write_record  # noqa: E402

from cnnlab.calibration import sampling_floor  # noqa: E402
from cnnlab.stats import summarize  # noqa: E402

FIGURES = ("ece", "ece_floor", "nll", "brier", "mean_confidence")


def train(data: str, preset: str, seed: int, out: str, overrides: list[str]) -> dict:
    metrics = ensure_run(data, preset, seed, out, overrides)["metrics"]
    test = metrics["test"]
    return {
        "seed": seed,
        "temperature": metrics["calibration"]["temperature"],
        "accuracy": test["accuracy"],
        "calibrated_accuracy": test["accuracy"],  # the argmax of logits / T: the same predictions
        "raw": {
            "ece": test["ece"],
            "ece_floor": sampling_floor(test["reliability"])[0],
            "nll": test["loss"],
            "brier": test["brier"],
            "mean_confidence": test["mean_confidence"],
        },
        "calibrated": {
            **{k: test["calibrated"][k] for k in FIGURES if k != "ece_floor"},
            "ece_floor": sampling_floor(test["calibrated"]["reliability"])[0],
        },
        "train_time_s": metrics["train_time_s"],
    }


def summary(runs: list[dict]) -> dict:
    out = {
        "accuracy": summarize([r["accuracy"] for r in runs]),
        "temperature": summarize([r["temperature"] for r in runs]),
    }
    for which in ("raw", "calibrated"):
        out[which] = {k: summarize([r[which][k] for r in runs]) for k in FIGURES}
    return out


def rows(presets: dict) -> list[list]:
    def pct(s: dict) -> str:
        return f"{100 * s['mean']:.2f}" + (f" ± {100 * s['std']:.2f}" if s["std"] is not None else "")

    def plain(s: dict) -> str:
        return f"{s['mean']:.4f}" + (f" ± {s['std']:.4f}" if s["std"] is not None else "")

    table = []
    for name, entry in presets.items():
        s, n = entry["summary"], len(entry["runs"])
        table.append(
            [
                name,
                n,
                pct(s["accuracy"]),
                f"{s['temperature']['mean']:.3f}",
                f"{pct(s['raw']['ece'])} -> {pct(s['calibrated']['ece'])}",
                f"{100 * s['calibrated']['ece_floor']['mean']:.2f}",
                f"{plain(s['raw']['nll'])} -> {plain(s['calibrated']['nll'])}",
                f"{plain(s['raw']['brier'])} -> {plain(s['calibrated']['brier'])}",
                f"{pct(s['raw']['mean_confidence'])} -> {pct(s['calibrated']['mean_confidence'])}",
            ]
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--keep", help="keep the runs in this folder (and reuse the complete ones found there)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    args = parser.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="cnnlab-calibration-")
    runs = []
    for seed in range(args.seeds):
        out = os.path.join(folder, run_name(args.preset, seed, args.set))
        runs.append(train(os.path.abspath(args.data), args.preset, seed, out, args.set))
        r = runs[-1]
        print(
            f"{args.preset} seed {seed}: accuracy {100 * r['accuracy']:.2f}%, T {r['temperature']:.3f}, ECE "
            f"{100 * r['raw']['ece']:.2f}% -> {100 * r['calibrated']['ece']:.2f}%, NLL {r['raw']['nll']:.4f} -> "
            f"{r['calibrated']['nll']:.4f}",
            flush=True,
        )
    path = os.path.join(RECORDS, "calibration.json")
    presets = json.load(open(path))["results"]["presets"] if os.path.exists(path) else {}
    name = " ".join([args.preset, *args.set])
    presets[name] = {"command": " ".join(sys.argv), "runs": runs, "summary": summary(runs)}
    columns = ["preset", "seeds", "test accuracy %", "temperature", "ECE % raw -> calibrated", "its floor %", "NLL"]
    columns.append("Brier")
    columns.append("mean confidence %")
    results = {
        "presets": presets,
        "tables": {"test split, raw -> calibrated": {"columns": columns, "rows": rows(presets)}},
    }
    print(
        write_record(
            "calibration", "calibration of the test probabilities before and after temperature scaling", results
        )
    )
    if not args.keep:
        subprocess.run(["rm", "-rf", folder], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
