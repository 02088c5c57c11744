"""What giving the test-time augmentation views to only the least confident images costs (tta_share): a
finished run's validation split evaluated at each share against share 1 (every image gets the views): the
accuracy, how many predictions differ from share 1 and McNemar's exact p on the images only one of the two
gets right, and the evaluation time (the shares interleaved, the median over --rounds).

    cnnlab train --data ../shared/datasets/cifar10 --out runs/fast
    python benchmarks/tta_share.py runs/fast --shares 0.1,0.25,0.5,1 --rounds 5

The validation split, never the test folder: a share is a choice, and a choice is made on validation. The run's
own views (tta_translate), precision, eval batch size (the groups a share is taken of) and device are kept; a
run without a validation split (val_fraction 0, as fast94) or trained with --no-tta is refused. Writes
benchmarks/records/tta_share.json (the page: docs/training.md, "Test-time augmentation"). Measured last:
on a `fast` run, seed 0 (the record's command).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import torch
from scipy.stats import binomtest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

from cnnlab.data import Preprocessing  # noqa: E402
from cnnlab.device import set_threads, use_bf16  # noqa: E402
from cnnlab.evaluation import TestTimeAugmentation, predict_batches  # noqa: E402
from cnnlab.pipeline import load_data, load_trained, make_loader  # noqa: E402

TITLE = "validation split by share"


def validation_loader(run_dir: str):
    """(model, loader of the run's validation split, bf16, the run's TestTimeAugmentation), as evaluation sees them."""
    model, cfg, run = load_trained(run_dir)
    cfg = cfg.replace(progress=False)
    if not cfg.tta:
        sys.exit(f"{run_dir}: trained with --no-tta; there are no views to share")
    set_threads(cfg.threads)
    prep = Preprocessing.from_dict(run["data"]["preprocessing"])
    dataset = load_data(cfg, image_size=prep.image_size)
    if dataset.val is None:
        sys.exit(f"{run_dir}: no validation split (val_fraction {cfg.val_fraction}); a share is chosen on one")
    device = next(model.parameters()).device
    loader = make_loader(dataset.val, cfg, prep, device, training=False)
    return model, loader, use_bf16(cfg.precision, device), TestTimeAugmentation.of(cfg)


def timed(model, loader, bf16: bool, tta: TestTimeAugmentation) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(logits, labels, seconds) of one evaluation of the split (predict_batches copies to the host: synced)."""
    start = time.perf_counter()
    logits, labels = predict_batches(model, loader, bf16, tta)
    return logits, labels, time.perf_counter() - start


def compared(predicted: torch.Tensor, every: torch.Tensor, labels: torch.Tensor) -> dict:
    """One share's predictions against share 1's: accuracy, the predictions that differ, and McNemar's exact
    test on the discordant pairs (right at this share only, right at share 1 only)."""
    right, right_every = predicted == labels, every == labels
    only_share, only_every = int((right & ~right_every).sum()), int((~right & right_every).sum())
    discordant = only_share + only_every
    return {
        "accuracy": right.double().mean().item(),
        "differing": int((predicted != every).sum()),
        "right_at_share_only": only_share,
        "right_at_share_1_only": only_every,
        "mcnemar_p": binomtest(only_share, discordant, 0.5).pvalue if discordant else 1.0,
    }


def table(results: dict) -> dict:
    rows = [
        [
            f"{share:g}",
            f"{100 * r['accuracy']:.2f}",
            r["differing"],
            f"{r['right_at_share_only']} / {r['right_at_share_1_only']}",
            f"{r['mcnemar_p']:.3g}",
            f"{r['eval_s']:.3f}",
            f"{r['eval_s'] / results['shares']['1']['eval_s']:.2f}",
        ]
        for share, r in ((float(k), v) for k, v in results["shares"].items())
    ]
    columns = ["share", "accuracy %", "predictions differing from share 1", "right only here / only at 1"]
    columns += ["McNemar p", "evaluation s (median)", "time vs share 1"]
    return {TITLE: {"columns": columns, "rows": rows}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished run with a validation split")
    parser.add_argument("--shares", default="0.1,0.25,0.5,1", help="comma-separated, each in (0, 1]; 1 is added")
    parser.add_argument("--rounds", type=int, default=5, help="timed evaluations of each share, interleaved")
    args = parser.parse_args()
    shares = sorted({float(s) for s in args.shares.split(",")} | {1.0})
    if not all(0 < s <= 1 for s in shares) or args.rounds < 1:
        sys.exit("--shares: each in (0, 1]; --rounds: at least 1")
    model, loader, bf16, tta = validation_loader(args.run_dir)
    views = {s: dataclasses.replace(tta, share=s) for s in shares}
    logits, times = {}, {s: [] for s in shares}
    for s in shares:  # untimed: the first pass warms the kernels; the logits are the same every round
        logits[s], labels, _ = timed(model, loader, bf16, views[s])
    for round_ in range(args.rounds):  # A B C, C B A, ...: drifting load hits every share alike
        for s in shares if round_ % 2 == 0 else shares[::-1]:
            times[s].append(timed(model, loader, bf16, views[s])[2])
    every = logits[1.0].argmax(1)
    results = {"run": os.path.abspath(args.run_dir), "images": len(labels), "tta": dataclasses.asdict(tta)}
    results["rounds"], results["shares"] = args.rounds, {}
    for s in shares:
        entry = compared(logits[s].argmax(1), every, labels)
        entry.update(eval_s=statistics.median(times[s]), eval_s_rounds=[round(t, 4) for t in times[s]])
        results["shares"][f"{s:g}"] = entry
        print(
            f"share {s:g}: accuracy {100 * entry['accuracy']:.2f}%, {entry['differing']} predictions differ from "
            f"share 1 (McNemar p {entry['mcnemar_p']:.3g}), evaluation {entry['eval_s']:.3f} s (median)",
            flush=True,
        )
    results["tables"] = table(results)
    figure = (
        f"validation accuracy and evaluation time with the TTA views for a share of each batch ({len(labels)} images)"
    )
    print(f"wrote {write_record('tta_share', figure, results)}")


if __name__ == "__main__":
    main()
