"""Does starting from a CIFAR-10 run help on a small photo folder? Trains the same folder from scratch and
from a finished run's weights (`--init-from`, a new head), several seeds each, and compares the ways on
the validation split held out of the training images (mean, 95% CI; the ways share their seeds, so Tukey's
range test paired on them, adjusted for picking the best: cnnlab.stats.compare_with_best); the way chosen on
validation then has its test accuracy reported, once.

    python tools/make_photo_folder.py ../shared/datasets/cifar10 /tmp/photos
    cnnlab train --data ../shared/datasets/cifar10 --out runs/fast
    python benchmarks/finetune_vs_scratch.py /tmp/photos runs/fast --seeds 3 --epochs 5

Runs go to a temporary folder; the figures go to benchmarks/records/finetune_vs_scratch.json (docs/finetune.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

from cnnlab.stats import compare_with_best, format_interval, summarize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("source_run", help="a finished cnnlab run (e.g. the fast preset on CIFAR-10)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, default=0, help="the same short budget for every way (0 = adapted default)"
    )
    parser.add_argument("--val-fraction", type=float, default=0.1, help="held out of the training images to compare on")
    args = parser.parse_args()
    ways = {
        "scratch": [],
        "init-from": ["--init-from", os.path.abspath(args.source_run)],
        "finetune preset + init-from": ["--preset", "finetune", "--init-from", os.path.abspath(args.source_run)],
    }
    budget = ["--epochs", str(args.epochs)] if args.epochs else []
    scores: dict[str, list[float]] = {way: [] for way in ways}
    tests: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):  # interleaved, so a slow spell of the machine hits every way alike
            for way, flags in ways.items():
                out = os.path.join(tmp, f"{way.replace(' ', '_')}-{seed}")
                cmd = [
                    sys.executable,
                    "-m",
                    "cnnlab.cli",
                    "train",
                    "--data",
                    args.photos,
                    "--out",
                    out,
                    "--seed",
                    str(seed),
                    "--no-progress",
                    "--log",
                    "none",
                    "--val-fraction",
                    str(args.val_fraction),
                    *budget,
                    *flags,
                ]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                metrics = json.load(open(os.path.join(out, "metrics.json")))
                config = json.load(open(os.path.join(out, "config.json")))["config"]
                history = json.load(open(os.path.join(out, "history.json")))
                scores[way].append(history[-1]["val_accuracy"])
                tests[way].append(metrics["test"]["accuracy"])
                print(
                    f"{way:<28} seed {seed}: validation {100 * scores[way][-1]:.2f}% ({config['epochs']} epochs, "
                    f"batch {config['batch_size']}, train {metrics['train_time_s']:.0f} s)",
                    flush=True,
                )
    units = {way: [(seed,) for seed in range(args.seeds)] for way in ways}  # the ways share their seeds: paired
    comparison = compare_with_best(scores, units)
    rows = []
    for way, values in scores.items():
        s, p = summarize(values), comparison.p_adjusted[way]
        rows.append(
            [way, s["n"], format_interval(s), f"{100 * (s['std'] or 0):.2f}", "best" if p is None else f"{p:.3g}"]
        )
        print(f"{way:<28} validation accuracy % (n={s['n']}): {format_interval(s)}; adj. p vs best {rows[-1][-1]}")
    chosen = comparison.best
    test = summarize(tests[chosen])
    print(f"chosen on validation: {chosen}; its test accuracy % (reported once): {format_interval(test)}")
    results = {
        "ways": {way: {"validation": scores[way], "test": tests[way]} for way in ways},
        "comparison": comparison.method,
        "chosen": chosen,
        "chosen_test": test,
        "tables": {
            "validation accuracy by way": {
                "columns": ["way", "seeds", "validation accuracy % [95% CI]", "std", "adj. p vs best"],
                "rows": rows,
            },
            "the way chosen on validation, tested once": {
                "columns": ["chosen", "test accuracy % [95% CI]"],
                "rows": [[chosen, format_interval(test)]],
            },
        },
    }
    print(write_record("finetune_vs_scratch", "fine-tuning vs training from scratch on a small photo folder", results))


if __name__ == "__main__":
    main()
