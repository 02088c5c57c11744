"""Recipe choices made on validation: a preset against variants of it (some keys changed), each trained over
the same seeds with a validation split held out of the training images, and the choice written to
benchmarks/records/recipe_choices.json.

    python benchmarks/recipe_choices.py DATA --preset fast94 --seeds 3 --runs ~/choice-runs \\
        --variant label_smoothing=0.2 --variant brightness=0,contrast=0 --variant epochs=7

The first variant, the baseline, is the preset as shipped (with --baseline KEY=VALUE,... another one). Every
run holds out --val-fraction (default 0.1) of the training images; the test folder plays no part in the
choice (each run still measures it, in its own metrics.json; the record leaves it out). The variants
alternate within each seed (seed 0: A, B, C; seed 1: A, B, C ...), so that drifting load hits them alike, and
share the seeds, so that their differences are paired.

Per variant: the final validation accuracy (mean, std, 95% interval) and its paired difference from the
baseline's over the seeds (mean and 95% interval), the training time, and the **time to the target**: the
training time up to the end of the first epoch whose validation accuracy reaches --target (default 0.94).
A variant is **kept** when it reaches the target in every seed and its mean time to it is below the
baseline's (or when the baseline itself misses the target in some seed); else dropped (the record says
why). Training times are comparable within one record only (one machine, one precision: both named in it).

--runs keeps the runs and makes the benchmark resumable (benchmarks/presets.py's runs: complete ones are
read, stopped ones resumed). `--set KEY=VALUE` changes every run (e.g. `--set precision=fp32`). With
--record NAME the record is written as NAME.json (default recipe_choices).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from presets import ensure_run, run_name  # noqa: E402
from record import write_record  # noqa: E402

from cnnlab.stats import summarize  # noqa: E402


@dataclass(frozen=True)
class RunFigures:
    """What one run of one variant gives the choice: from its history.json (validation only)."""

    seed: int
    val_accuracy: float  # after the last epoch
    train_time_s: float
    time_to_target_s: float | None  # None: never reached
    epochs_to_target: int | None
    precision: str  # what the run trained in: fp32 or bf16

    @classmethod
    def of(cls, seed: int, history: list[dict], target: float, precision: str = "fp32") -> RunFigures:
        if not history or history[-1].get("val_accuracy") is None:
            raise ValueError("the run has no validation accuracy: train it with a validation split")
        elapsed, reached = 0.0, None
        for record in history:
            elapsed += record["time_s"]
            if reached is None and record["val_accuracy"] >= target:
                reached = (elapsed, record["epoch"])
        return cls(
            seed=seed,
            val_accuracy=history[-1]["val_accuracy"],
            train_time_s=elapsed,
            time_to_target_s=reached[0] if reached else None,
            epochs_to_target=reached[1] if reached else None,
            precision=precision,
        )


def parse_variant(text: str) -> list[str]:
    """`key=value,key=value` -> ['key=value', ...] (empty text: the preset as shipped)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if "=" not in item:
            raise SystemExit(f"recipe_choices: variant {text!r}: {item!r} is not KEY=VALUE")
    return items


def verdict(runs: list[RunFigures], baseline: list[RunFigures]) -> tuple[bool, str]:
    """Kept or dropped, and why (see the module's docstring)."""
    missed = [r.seed for r in runs if r.time_to_target_s is None]
    if missed:
        return False, f"target not reached with seed(s) {', '.join(map(str, missed))}"
    base = [r.time_to_target_s for r in baseline if r.time_to_target_s is not None]
    mine = sum(r.time_to_target_s for r in runs) / len(runs)
    if len(base) < len(baseline):
        return True, "reaches the target in every seed; the baseline does not"
    mean_base = sum(base) / len(base)
    if mine < mean_base:
        return True, f"time to target {mine / mean_base:.2f}x the baseline's"
    return False, f"time to target {mine / mean_base:.2f}x the baseline's, not less"


def compare(variants: dict[str, list[RunFigures]]) -> dict[str, dict]:
    """Each variant's figures, its paired difference from the first variant (the baseline) and its verdict."""
    names = list(variants)
    baseline = variants[names[0]]
    by_seed = {r.seed: r for r in baseline}
    out = {}
    for name in names:
        runs = variants[name]
        entry = {
            "runs": [r.__dict__ for r in runs],
            "val_accuracy": summarize([r.val_accuracy for r in runs]),
            "train_time_s": summarize([r.train_time_s for r in runs]),
            "time_to_target_s": summarize([r.time_to_target_s for r in runs if r.time_to_target_s is not None]),
            "reached": sum(r.time_to_target_s is not None for r in runs),
        }
        if name != names[0]:
            paired = [r.val_accuracy - by_seed[r.seed].val_accuracy for r in runs if r.seed in by_seed]
            entry["val_accuracy_difference"] = summarize(paired)
            entry["kept"], entry["why"] = verdict(runs, baseline)
        out[name] = entry
    return out


def points(summary: dict, signed: bool = False) -> str:
    """A summarize() of fractions in percent: `mean ± std [low, high]`, as far as it goes."""
    if not summary["n"]:
        return "-"
    sign = "+" if signed else ""
    text = f"{100 * summary['mean']:{sign}.2f}"
    if summary["std"] is not None:
        text += (
            f" ± {100 * summary['std']:.2f} [{100 * summary['ci_low']:{sign}.2f}, {100 * summary['ci_high']:{sign}.2f}]"
        )
    return text


def seconds(summary: dict) -> str:
    return "-" if not summary["n"] else f"{summary['mean']:.0f}"


COLUMNS = [
    "variant",
    "seeds",
    "val accuracy % (mean ± std [95% CI])",
    "difference from baseline, points [95% CI]",
    "training s",
    "reached target",
    "time to target s",
    "verdict",
]


def table(compared: dict[str, dict]) -> dict:
    rows = []
    for name, entry in compared.items():
        difference = entry.get("val_accuracy_difference")
        verdict_text = (
            "baseline" if "kept" not in entry else ("kept: " if entry["kept"] else "dropped: ") + entry["why"]
        )
        rows.append(
            [
                name,
                entry["val_accuracy"]["n"],
                points(entry["val_accuracy"]),
                points(difference, signed=True) if difference else "-",
                seconds(entry["train_time_s"]),
                f"{entry['reached']} of {entry['val_accuracy']['n']}",
                seconds(entry["time_to_target_s"]),
                verdict_text,
            ]
        )
    return {"columns": COLUMNS, "rows": rows}


def history_of(out: str) -> list[dict]:
    with open(os.path.join(out, "history.json"), encoding="utf-8") as fh:
        return json.load(fh)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--preset", default="fast94")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE,...", help="a variant to try")
    parser.add_argument("--baseline", default="", metavar="KEY=VALUE,...", help="the baseline (default: as shipped)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="held out of the training images")
    parser.add_argument("--target", type=float, default=0.94, help="the validation accuracy to reach")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every run")
    parser.add_argument("--runs", help="keep the runs in this folder (and reuse the complete ones found there)")
    parser.add_argument("--record", default="recipe_choices", help="the record's name")
    args = parser.parse_args()
    if not args.variant:
        parser.error("give at least one --variant KEY=VALUE,...")
    folder = args.runs or tempfile.mkdtemp(prefix="cnnlab-choices-")
    data = os.path.abspath(args.data)
    split = f"val_fraction={args.val_fraction:g}"
    variants = {(args.baseline or "as shipped"): parse_variant(args.baseline)}
    variants.update({text: parse_variant(text) for text in args.variant})
    figures: dict[str, list[RunFigures]] = {name: [] for name in variants}
    for seed in range(args.seeds):
        for name, overrides in variants.items():
            keys = [split, *args.set, *overrides]
            out = os.path.join(folder, run_name(args.preset, seed, keys))
            precision = "bf16" if ensure_run(data, args.preset, seed, out, keys)["config"]["data"]["bf16"] else "fp32"
            figures[name].append(RunFigures.of(seed, history_of(out), args.target, precision))
            r = figures[name][-1]
            print(f"{name} seed {seed}: val {100 * r.val_accuracy:.2f}% in {r.train_time_s:.0f} s", flush=True)
    compared = compare(figures)
    results = {
        "preset": args.preset,
        "val_fraction": args.val_fraction,
        "target": args.target,
        "variants": compared,
        "tables": {f"{args.preset}: variants on validation, target {100 * args.target:g}%": table(compared)},
    }
    print(write_record(args.record, f"recipe choices for {args.preset}, made on validation", results))
    if not args.runs:
        subprocess.run(["rm", "-rf", folder], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
