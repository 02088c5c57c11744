"""Does the `seed` preset learn as the study's Keras code does? Two levels, each against the study's own
Keras model run in its own environment (--keras-python; see ../shared/peers/keras_seed_study.py's header).

    python benchmarks/seed_parity.py --keras-python /work/keras-venv/bin/python exact
    nice -n 10 python benchmarks/seed_parity.py --keras-python /work/keras-venv/bin/python statistical \
        [--train-images 3000 --test-images 1000 --epochs 3 --seeds 3]

exact: Keras builds the study's model (dropout off) and saves its initial weights and one batch of real
images (benchmarks/keras_seed_exact.py); cnnlab loads those weights into the preset's model, reads the same
images through its own loader and trains with the optimiser the preset builds, in fp32. Loss, gradients
and weights after 1 and after 10 Adam steps, and the BatchNorm moving statistics, are compared (max abs
and max relative differences); the initial weights, which no two libraries draw alike, are compared by
their distributions (mean and std per layer against glorot_uniform's). Record: records/seed_parity_exact.json.

statistical: the same class-balanced subset of the data (symlinks in a folder under /tmp, never in the
repository) trained by both, seeds interleaved (Keras seed 0, cnnlab seed 0, Keras seed 1, ...), the
preset as `cnnlab train --preset seed` runs it; per-epoch validation accuracy and the test accuracy with
95% CIs and Welch's p. Record: records/seed_parity_statistical.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

from cnnlab.files import write_atomic  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "..", "shared", "peers", "keras_seed_study.py")
# per epoch: the training loss and accuracy (batch statistics, dropout on) show learning before the
# BatchNorm moving statistics, which validation uses, have caught up (momentum 0.99)
PER_EPOCH = ("loss", "accuracy", "val_loss", "val_accuracy", "time_s")


def build_subset(data: str, train_images: int, test_images: int, seed: int = 0) -> str:
    """A folder under /tmp of symlinks to `train_images` training and `test_images` test images, the same
    number from each class, drawn with `seed`; the same arguments give the same folder."""
    folder = os.path.join(tempfile.gettempdir(), f"cnnlab-parity-{train_images}-{test_images}-{seed}")
    rng = np.random.default_rng(seed)
    for split, total in (("train", train_images), ("test", test_images)):
        classes = sorted(c for c in os.listdir(os.path.join(data, split)) if not c.startswith("."))
        for name in classes:
            source = os.path.join(os.path.abspath(data), split, name)
            files = sorted(os.listdir(source))
            chosen = sorted(files[i] for i in rng.choice(len(files), total // len(classes), replace=False))
            target = os.path.join(folder, split, name)
            os.makedirs(target, exist_ok=True)
            for file in chosen:
                link = os.path.join(target, file)
                if not os.path.islink(link):
                    os.symlink(os.path.join(source, file), link)
    return folder


def run_keras(python: str, subset: str, epochs: int, seed: int) -> dict:
    result = subprocess.run([python, PEER, subset, "train", str(epochs), str(seed)], capture_output=True, text=True)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines or "test_accuracy" not in lines[-1]:
        sys.exit(f"the Keras peer failed:\n{result.stdout[-800:]}{result.stderr[-1500:]}")
    epochs = lines[:-1]
    return {**{key: [line[key] for line in epochs] for key in PER_EPOCH}, "test_accuracy": lines[-1]["test_accuracy"]}


def run_cnnlab(subset: str, epochs: int, seed: int, out: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "cnnlab",
        "train",
        "--preset",
        "seed",
        "--data",
        subset,
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
        "--out",
        out,
        "--no-progress",
        "--log",
        "none",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"cnnlab failed: {' '.join(command)}\n{result.stdout[-800:]}{result.stderr[-1500:]}")
    with open(os.path.join(out, "history.json"), encoding="utf-8") as fh:
        history = json.load(fh)
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    return {
        **{key: [record[key] for record in history] for key in PER_EPOCH},
        "test_accuracy": metrics["test"]["accuracy"],
    }


def difference(keras: list[float], mine: list[float]) -> dict | None:
    """cnnlab's mean minus Keras's, with the 95% interval of Welch's t (what differences the seeds rule out)."""
    from scipy import stats

    if min(len(keras), len(mine)) < 2 or np.ptp(keras + mine) == 0:
        return None
    test = stats.ttest_ind(mine, keras, equal_var=False)
    interval = test.confidence_interval(0.95)
    return {
        "mean": float(np.mean(mine) - np.mean(keras)),
        "ci_low": float(interval.low),
        "ci_high": float(interval.high),
    }


def compare(runs: dict[str, list[dict]], epochs: int) -> dict:
    """Per epoch and for the test: each side's mean and 95% CI over seeds, Welch's p, and the difference
    of the means with its 95% interval."""
    from cnnlab.stats import summarize, welch_p

    rows = []
    measures = [
        (f"{name} epoch {e + 1}", lambda r, e=e, key=key: r[key][e])
        for key, name in (("accuracy", "train"), ("val_accuracy", "val"))
        for e in range(epochs)
    ]
    for label, pick in measures + [("test", lambda r: r["test_accuracy"])]:
        values = {side: [pick(r) for r in runs[side]] for side in ("keras", "cnnlab")}
        rows.append(
            {
                "measure": label,
                "keras": summarize(values["keras"]),
                "cnnlab": summarize(values["cnnlab"]),
                "welch_p": welch_p(values["keras"], values["cnnlab"]),
                "difference": difference(values["keras"], values["cnnlab"]),
                "values": values,
            }
        )
    return {"rows": rows}


def print_table(rows: list[dict]) -> None:
    from cnnlab.stats import format_interval

    print(
        f"{'accuracy %':14} {'Keras (study code)':>26} {'cnnlab --preset seed':>26} {'Welch p':>8} {'difference':>22}"
    )
    for row in rows:
        p = "-" if row["welch_p"] is None else f"{row['welch_p']:.3f}"
        d = row.get("difference")
        gap = "-" if d is None else f"{100 * d['mean']:+.2f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
        print(
            f"{row['measure']:14} {format_interval(row['keras']):>26} {format_interval(row['cnnlab']):>26} {p:>8} {gap:>22}"
        )


def statistical(args: argparse.Namespace) -> None:
    subset = None if args.report_only else build_subset(args.data, args.train_images, args.test_images)
    work = args.work or tempfile.mkdtemp(prefix="cnnlab-parity-runs-")
    os.makedirs(work, exist_ok=True)
    saved = os.path.join(work, "runs.json")
    runs: dict[str, list[dict]] = {"keras": [], "cnnlab": []}
    if os.path.exists(saved):  # --work of a stopped run: its finished seeds are kept
        with open(saved, encoding="utf-8") as fh:
            runs = json.load(fh)
    print(f"runs kept in {saved}", flush=True)
    for seed in range(0 if args.report_only else args.seeds):
        for side in ("keras", "cnnlab"):
            if any(r["seed"] == seed for r in runs[side]):
                continue
            if side == "keras":
                result = run_keras(args.keras_python, subset, args.epochs, seed)
            else:
                result = run_cnnlab(subset, args.epochs, seed, os.path.join(work, f"seed{seed}"))
            runs[side].append({"seed": seed, **result})
            print(json.dumps({"side": side, "seed": seed, **result}), flush=True)
            write_atomic(saved, json.dumps(runs))  # kept as it goes: a stopped run resumes from its seeds
    summary = compare(runs, args.epochs)
    print_table(summary["rows"])
    results = {
        "subset": {
            "train_images": args.train_images,
            "test_images": args.test_images,
            "train_split": args.train_images * 9 // 10,
            "validation_split": args.train_images // 10,
        },
        "epochs": args.epochs,
        "seeds": {side: [r["seed"] for r in runs[side]] for side in runs},
        **summary,
        "runs": runs,
    }
    path = write_record(
        "seed_parity_statistical",
        "validation accuracy per epoch and test accuracy, Keras study code vs cnnlab seed preset",
        results,
    )
    print(f"record: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("level", choices=["exact", "statistical"])
    parser.add_argument("--keras-python", required=True, help="the Python of the Keras environment")
    parser.add_argument(
        "--data", default=os.environ.get("CNNLAB_DATA", os.path.join(ROOT, "..", "shared", "datasets", "cifar10"))
    )
    parser.add_argument("--train-images", type=int, default=3000, help="statistical: from the train folder")
    parser.add_argument("--test-images", type=int, default=1000, help="statistical: from the test folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--work",
        help="statistical: folder of the runs (default: a new one under /tmp); "
        "given a stopped run's, it goes on from the seeds that finished",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="statistical: the table and record from the seeds --work holds, running nothing more",
    )
    parser.add_argument("--batch-images", type=int, default=10, help="exact: images in the batch (one a class)")
    parser.add_argument("--steps", type=int, default=10, help="exact: Adam steps")
    parser.add_argument("--keras-npz", help="exact: the Keras side's saved values (its OUT.npz) in place of running it")
    args = parser.parse_args()
    if args.level == "statistical":
        statistical(args)
    else:
        from seed_parity_exact import exact

        exact(args)


if __name__ == "__main__":
    main()
