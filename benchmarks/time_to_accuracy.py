"""Time to accuracy of a preset over several seeds.

    python benchmarks/time_to_accuracy.py [--seeds 3] [--preset fast] [--epochs N] [--val-fraction 0]
                                          [--targets 0.8191,0.85,0.94] [--model fastnet_wide] [--subset N]

Per seed and epoch: cumulative training time (evaluation excluded) and validation accuracy; then mean
and std of the final validation accuracy over seeds, the mean time to reach each target on validation,
the test accuracy (flip TTA as the preset says) once, at the end, training and inference images/s, and
the peak resident memory of the process, written to benchmarks/records/time_to_accuracy_<PRESET>.json.
Recipes are compared on validation, never on the test folder.
A preset without a validation split (fast94, or --val-fraction 0) has only the test folder to measure
on: its per-epoch figures are then test accuracies, a report of that recipe, not a basis for choosing.
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

import cnnlab  # noqa: E402
from cnnlab.data.preprocess import Preprocessing  # noqa: E402
from cnnlab.evaluation import TestTimeAugmentation, evaluate  # noqa: E402
from cnnlab.pipeline import load_data, load_trained, make_loader  # noqa: E402
from cnnlab.runs import load_run  # noqa: E402


def inference_rate(out: str) -> float:
    """Test images/s of a finished run's model, TTA as its config says."""
    model, run_cfg, run = load_trained(out)
    dataset = load_data(run_cfg)
    prep = Preprocessing.from_dict(run["data"]["preprocessing"])
    loader = make_loader(dataset.test, run_cfg, prep, next(model.parameters()).device, training=False)
    start = time.perf_counter()
    evaluate(model, loader, dataset.classes, tta=TestTimeAugmentation.of(run_cfg))
    return len(dataset.test) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("CNNLAB_DATA", "../shared/datasets/cifar10"))
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--targets", default="0.8191,0.85,0.94")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--model")
    parser.add_argument("--val-fraction", type=float)
    parser.add_argument("--subset", type=int, default=0)
    args = parser.parse_args()
    overrides = {
        k: v
        for k, v in (("epochs", args.epochs), ("model", args.model), ("val_fraction", args.val_fraction))
        if v is not None
    }
    cfg = cnnlab.preset(args.preset, data=args.data, progress=False, subset=args.subset, **overrides)
    targets = [float(t) for t in args.targets.split(",")]
    finals, tests, reach, rates = [], [], {t: [] for t in targets}, []
    on_val = cfg.val_fraction > 0
    split, key = ("validation", "val_accuracy") if on_val else ("test", "test_accuracy")
    if not on_val:
        print("no validation split: the per-epoch figures are test accuracies (a report, not for choosing)")
    print(
        f"preset {args.preset} ({cfg.model}), {cfg.epochs} epochs, batch {cfg.batch_size}, "
        f"val_fraction {cfg.val_fraction}, {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            out = os.path.join(tmp, f"seed{seed}")
            cnnlab.train_run(
                cfg.replace(seed=seed), out, test_at_epochs=() if on_val else tuple(range(1, cfg.epochs + 1))
            )
            run = load_run(out)
            history = run["history"]
            elapsed = 0.0
            first_hit = {}
            for record in history:
                elapsed += record["time_s"]
                print(f"seed {seed} epoch {record['epoch']}: {elapsed:7.1f} s  {split} {100 * record[key]:.2f}%")
                for t in targets:
                    if record[key] >= t and t not in first_hit:
                        first_hit[t] = elapsed
            finals.append(history[-1][key])
            tests.append(run["metrics"]["test"]["accuracy"])
            for t in targets:
                reach[t].append(first_hit.get(t))
            n_train = load_run(out)["data"]["sizes"]["training"]
            rates.append(n_train * len(history) / elapsed)
            infer_rate = inference_rate(out)
    mean = statistics.mean(finals)
    std = statistics.stdev(finals) if len(finals) > 1 else 0.0
    print(
        f"final {split} accuracy over {len(finals)} seeds: {100 * mean:.2f}% +/- {100 * std:.2f} (std); "
        f"runs: {', '.join(f'{100 * f:.2f}' for f in finals)}"
    )
    if on_val:
        print(
            f"test accuracy (reported once, not compared): {100 * statistics.mean(tests):.2f}% mean; "
            f"runs: {', '.join(f'{100 * f:.2f}' for f in tests)}"
        )
    for t in targets:
        hits = [r for r in reach[t] if r is not None]
        print(
            f"time to {100 * t:.2f}% ({split}): "
            + (
                f"{statistics.mean(hits):.0f} s mean ({len(hits)}/{len(finals)} seeds reached it)"
                if hits
                else "not reached"
            )
        )
    print(f"training {statistics.mean(rates):.0f} images/s; inference (TTA as configured) {infer_rate:.0f} images/s")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:,.0f} MB")
    rows = []
    for t in targets:
        hits = [r for r in reach[t] if r is not None]
        rows.append([f"{100 * t:.2f}%", f"{len(hits)}/{len(finals)}", f"{statistics.mean(hits):.0f}" if hits else "-"])
    results = {
        "preset": args.preset,
        "measured_on": split,
        "final": {"values": finals, "mean": mean, "std": std},
        "test": tests if on_val else None,
        "seconds_to_target": {f"{t:.4f}": reach[t] for t in targets},
        "train_images_per_s": statistics.mean(rates),
        "inference_images_per_s": infer_rate,
        "peak_memory_mb": peak_mb,
        "tables": {
            f"time to each {split} accuracy": {
                "columns": [f"{split} accuracy", "seeds that reached it", "mean training s to reach it"],
                "rows": rows,
            }
        },
    }
    print(write_record(f"time_to_accuracy_{args.preset}", f"time to accuracy of the {args.preset} preset", results))


if __name__ == "__main__":
    main()
