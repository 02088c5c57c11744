"""Which default for an imbalanced training set? CIFAR-10 made long-tailed (per class an exponential profile
from --largest down to --smallest images, in class order; the test split unchanged), the `fast` preset
trained --seeds seeds each of `--class-weight none`, `--class-weight balanced` and `--sampler balanced`
(interleaved). The verdict is the validation split's (the run's default one, held out of the long-tailed
training folder) balanced accuracy and macro-F1, mean and 95% CI over seeds; the test figures are reported
once, beside it, never used to choose.

    python benchmarks/imbalance.py ../shared/datasets/cifar10 --seeds 3

The long-tailed folder is made of symlinks under a temporary folder (never in the repository); runs go
there too and are deleted. Writes benchmarks/records/imbalance.json (figure, command, machine, torch,
commit, date, results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from record import write_record
from sklearn.metrics import balanced_accuracy_score, f1_score

from cnnlab.stats import format_interval, summarize

MODES = {
    "none": ["--class-weight", "none"],
    "class_weight": ["--class-weight", "balanced"],
    "sampler": ["--sampler", "balanced"],
}
HERE = os.path.dirname(os.path.abspath(__file__))


def long_tailed_counts(n_classes: int, largest: int, smallest: int) -> list[int]:
    """Images of class k: largest x (smallest / largest)^(k / (n_classes - 1)), rounded."""
    return [round(largest * (smallest / largest) ** (k / (n_classes - 1))) for k in range(n_classes)]


def make_long_tailed(source: str, out: str, largest: int, smallest: int, seed: int = 0) -> dict[str, int]:
    """out/train: a seeded random subset of each class of source/train, by symlinks; out/test -> source/test."""
    classes = sorted(os.listdir(os.path.join(source, "train")))
    rng = np.random.default_rng(seed)
    counts = dict(zip(classes, long_tailed_counts(len(classes), largest, smallest)))
    for name, count in counts.items():
        files = sorted(os.listdir(os.path.join(source, "train", name)))
        os.makedirs(os.path.join(out, "train", name))
        for file in sorted(rng.choice(files, count, replace=False)):
            os.symlink(
                os.path.abspath(os.path.join(source, "train", name, file)), os.path.join(out, "train", name, file)
            )
    os.symlink(os.path.abspath(os.path.join(source, "test")), os.path.join(out, "test"))
    return counts


def scores(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "balanced_accuracy": float(balanced_accuracy_score(true, predicted)),
        "macro_f1": float(f1_score(true, predicted, average="macro", zero_division=0)),
        "accuracy": float(np.mean(true == predicted)),
    }


def from_confusion(confusion: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) labels of a confusion matrix (rows = true class)."""
    pairs = [(t, p, n) for t, row in enumerate(confusion) for p, n in enumerate(row) if n]
    return (
        np.repeat([t for t, _, _ in pairs], [n for _, _, n in pairs]),
        np.repeat([p for _, p, _ in pairs], [n for _, _, n in pairs]),
    )


def validation_scores(run_dir: str) -> dict[str, float]:
    """The finished model's scores on its run's validation split: from the history where the run recorded
    them, else predicted again here (the library: the run's own preprocessing and test-time augmentation)."""
    history = json.load(open(os.path.join(run_dir, "history.json")))
    last = history[-1] if isinstance(history, list) else history["history"][-1]
    if "val_balanced_accuracy" in last and "val_macro_f1" in last:
        return {
            "balanced_accuracy": last["val_balanced_accuracy"],
            "macro_f1": last["val_macro_f1"],
            "accuracy": last["val_accuracy"],
        }
    from cnnlab.data import Preprocessing
    from cnnlab.device import use_bf16
    from cnnlab.evaluation import TestTimeAugmentation, predict_batches
    from cnnlab.pipeline import load_data, load_trained, make_loader

    model, cfg, run = load_trained(run_dir)
    prep = Preprocessing.from_dict(run["data"]["preprocessing"])
    dataset = load_data(cfg.replace(progress=False), image_size=prep.image_size)
    device = next(model.parameters()).device
    loader = make_loader(dataset.val, cfg, prep, device, training=False)
    logits, labels = predict_batches(model, loader, use_bf16(cfg.precision, device), TestTimeAugmentation.of(cfg))
    return scores(labels.numpy(), logits.argmax(1).numpy())


def train_one(data: str, out: str, seed: int, flags: list[str], extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "cnnlab.cli",
        "train",
        "--data",
        data,
        "--out",
        out,
        "--seed",
        str(seed),
        "--no-progress",
        "--log",
        "none",
        *extra,
        *flags,
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    saved = json.load(open(os.path.join(out, "config.json")))
    config = saved["config"]
    test = scores(*from_confusion(metrics["test"]["confusion"]))
    return {
        "val": validation_scores(out),
        "test": test,
        "train_time_s": metrics["train_time_s"],
        "epochs": config["epochs"],
        "batch_size": config["batch_size"],
        "split": config["split"],  # how the validation split was drawn
        "bf16": saved["data"]["bf16"],  # the precision precision=auto resolved to
    }


def summary_table(results: dict[str, list[dict]]) -> dict:
    table = {}
    for mode, runs in results.items():
        table[mode] = {
            f"{split}_{key}": summarize([r[split][key] for r in runs])
            for split in ("val", "test")
            for key in ("balanced_accuracy", "macro_f1", "accuracy")
        }
    return table


def earlier_runs(args: argparse.Namespace) -> dict[str, list[dict]]:
    """The runs of the committed record, per mode, when it measured the same folder for the same epochs."""
    path = os.path.join(HERE, "records", "imbalance.json")
    record = json.load(open(path))
    runs = record["results"]["runs"]
    same = all(r["epochs"] == args.epochs for mode_runs in runs.values() for r in mode_runs) or not args.epochs
    counts = record["results"]["counts"]
    if not same or max(counts.values()) != args.largest or min(counts.values()) != args.smallest:
        raise SystemExit(f"{path}: measured another folder or epoch count; run without --extend")
    return {mode: list(runs.get(mode, [])) for mode in MODES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cifar10", help="CIFAR-10 as PNG folders (train/, test/)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--largest", type=int, default=2000)
    parser.add_argument("--smallest", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=0, help="the same epochs for every mode (0 = adapted default)")
    parser.add_argument(
        "--extend",
        action="store_true",
        help="keep the runs of the committed record (same folder and epochs) and train only the seeds it lacks",
    )
    args = parser.parse_args()
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    results: dict[str, list[dict]] = earlier_runs(args) if args.extend else {mode: [] for mode in MODES}
    first_seed = min(len(runs) for runs in results.values())
    results = {mode: runs[:first_seed] for mode, runs in results.items()}
    with tempfile.TemporaryDirectory(prefix="cnnlab-imbalance-") as tmp:
        data = os.path.join(tmp, "data")
        counts = make_long_tailed(args.cifar10, data, args.largest, args.smallest)
        print(
            f"long-tailed training folder: {sum(counts.values())} images, ratio {args.largest / args.smallest:g} "
            f"({', '.join(f'{c} {n}' for c, n in counts.items())}); test unchanged",
            flush=True,
        )
        for seed in range(first_seed, args.seeds):  # interleaved, so a slow spell of the machine hits every mode alike
            for mode, flags in MODES.items():
                run = train_one(data, os.path.join(tmp, f"{mode}-{seed}"), seed, flags, extra)
                results[mode].append(run)
                print(
                    f"{mode:<13} seed {seed}: val balanced accuracy {100 * run['val']['balanced_accuracy']:.2f}%, "
                    f"macro-F1 {100 * run['val']['macro_f1']:.2f}%; test {100 * run['test']['balanced_accuracy']:.2f}"
                    f"% ({run['epochs']} epochs, batch {run['batch_size']}, {run['train_time_s']:.0f} s)",
                    flush=True,
                )
    table = summary_table(results)
    print(
        f"\n{'mode':<13} {'val balanced acc %':<24} {'val macro-F1 %':<24} {'test balanced acc %':<24} "
        f"{'test macro-F1 %':<24} n"
    )
    for mode, row in table.items():
        print(
            f"{mode:<13} {format_interval(row['val_balanced_accuracy']):<24} {format_interval(row['val_macro_f1']):<24} "
            f"{format_interval(row['test_balanced_accuracy']):<24} {format_interval(row['test_macro_f1']):<24} "
            f"{row['val_balanced_accuracy']['n']}"
        )
    path = write_record(
        "imbalance",
        "validation balanced accuracy and macro-F1 (mean, 95% CI over seeds) on long-tailed CIFAR-10",
        {"counts": counts, "summary": table, "runs": results},
        command=" ".join(["python", "benchmarks/imbalance.py", *sys.argv[1:]]),
    )
    print(f"record: {path}")


if __name__ == "__main__":
    main()
