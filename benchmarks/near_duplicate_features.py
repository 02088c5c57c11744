"""How many CIFAR-10 test images have a near-duplicate in train/, found as `cnnlab data check --features RUN`
finds them, and how many of the pairs are real? Each test image's best train/ match among its candidates
(nearest by a finished run's penultimate features, by detail and by mirrored detail) by detail correlation
(cnnlab.check.features.matched_pairs); the count of test images whose best match is at least each threshold;
and sheets of pairs drawn at random from each band, to be judged by eye.

    python benchmarks/near_duplicate_features.py DATA RUN --sheets /tmp/sheets --matches /tmp/matches.npz
    # look at the sheets, write the verdicts (one JSON object: {"<band>": [true/false per pair shown]})
    python benchmarks/near_duplicate_features.py DATA RUN --judged verdicts.json --matches /tmp/matches.npz

The second call redraws the same pairs (seeded) and writes benchmarks/records/near_duplicate_features.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

from cnnlab.check.features import Embedding, embed, matched_pairs  # noqa: E402
from cnnlab.data.folder import list_class_files, list_classes  # noqa: E402

THRESHOLDS = (0.5, 0.6, 0.65, 0.7, 0.8, 0.9)
BANDS = ((0.7, 1.01), (0.6, 0.7), (0.5, 0.6))  # the first holds the default, 0.7
PER_BAND = 50


def files(root: str) -> list[str]:
    return [p for name in list_classes(root) for p in list_class_files(os.path.join(root, name))]


def best_matches(test: Embedding, train: Embedding) -> tuple[np.ndarray, np.ndarray]:
    """Each test image's best train/ match among its candidates and their detail correlation (-1: none)."""
    pairs = matched_pairs(test, train, threshold=-1.0)  # every candidate pair, the most similar first
    index, best = np.zeros(len(test.features), np.int64), np.full(len(test.features), -1.0, np.float32)
    first = np.unique(pairs.i, return_index=True)[1]  # each test row's first (best) pair
    index[pairs.i[first]], best[pairs.i[first]] = pairs.j[first], pairs.similarity[first]
    return index, best


def drawn(best: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Per band of similarity, up to PER_BAND test rows whose closest match falls in it, drawn at random."""
    rng = np.random.default_rng(seed)
    out = {}
    for low, high in BANDS:
        rows = np.flatnonzero((best >= low) & (best < high))
        out[f"{low:.2f}-{min(high, 1.0):.2f}"] = np.sort(rng.choice(rows, min(PER_BAND, len(rows)), replace=False))
    return out


def sheet(pairs: list[tuple[str, str, float]], path: str, scale: int = 3) -> None:
    """Pairs side by side, 5 a row, numbered in reading order (1 first), enlarged `scale` times."""
    cell, gap = 32 * scale, 8
    rows = (len(pairs) + 4) // 5
    canvas = Image.new("RGB", (5 * (2 * cell + 3 * gap), rows * (cell + 2 * gap)), "white")
    for k, (a, b, _) in enumerate(pairs):
        x, y = (k % 5) * (2 * cell + 3 * gap) + gap, (k // 5) * (cell + 2 * gap) + gap
        for n, p in enumerate((a, b)):
            img = Image.open(p).convert("RGB").resize((cell, cell), Image.NEAREST)
            canvas.paste(img, (x + n * (cell + gap // 2), y))
    canvas.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("run")
    parser.add_argument("--sheets", help="write contact sheets of the drawn pairs to this folder")
    parser.add_argument("--judged", help="verdicts on the drawn pairs: write the record")
    parser.add_argument("--seed", type=int, default=0, help="of the pairs drawn (a new seed: a fresh draw)")
    parser.add_argument("--matches", help="an .npz of each test image's best match: read if it exists, else written")
    args = parser.parse_args()
    train_files, test_files = files(os.path.join(args.data, "train")), files(os.path.join(args.data, "test"))
    if args.matches and os.path.exists(args.matches):
        saved = np.load(args.matches)
        index, best = saved["index"], saved["best"]
    else:
        both = embed(args.run, train_files + test_files, True)  # centred on the mean of both, as data check does
        n = len(train_files)
        train = Embedding(both.features[:n], both.detail[:n])
        test = Embedding(both.features[n:], both.detail[n:])
        index, best = best_matches(test, train)
        if args.matches:
            np.savez(args.matches, index=index, best=best)
    counts = {f"{t:.2f}": int((best >= t).sum()) for t in THRESHOLDS}
    for t, n in counts.items():
        print(f"similarity >= {t}: {n} of {len(test_files)} test images ({100 * n / len(test_files):.2f}%)")
    bands = drawn(best, args.seed)
    shown = {
        band: [(train_files[index[r]], test_files[r], float(best[r])) for r in rows] for band, rows in bands.items()
    }
    if args.sheets:
        os.makedirs(args.sheets, exist_ok=True)
        for band, pairs in shown.items():
            sheet(pairs, os.path.join(args.sheets, f"band_{band}.png"))
            with open(os.path.join(args.sheets, f"band_{band}.txt"), "w") as fh:
                fh.writelines(f"{k + 1} {a} {b} {s:.4f}\n" for k, (a, b, s) in enumerate(pairs))
        print(f"sheets in {args.sheets}")
    if args.judged:
        verdicts = json.load(open(args.judged))
        in_band = {f"{lo:.2f}-{min(hi, 1.0):.2f}": int(((best >= lo) & (best < hi)).sum()) for lo, hi in BANDS}
        precision = {
            band: {"real": sum(verdicts[band]), "looked_at": len(verdicts[band]), "in_band": in_band[band]}
            for band in shown
            if band in verdicts
        }
        rows = []
        for band, count in in_band.items():
            judged = precision.get(band)
            rows.append([band, count, f"{judged['real']} of {judged['looked_at']}" if judged else "-"])
        results = {
            "run": os.path.abspath(args.run),
            "test_images": len(test_files),
            "train_images": len(train_files),
            "with_a_twin_at_least": counts,
            "judged": precision,
            "tables": {
                "test images by their best train/ match's detail correlation": {
                    "columns": ["detail correlation", "test images", "real near-duplicates among those looked at"],
                    "rows": rows,
                }
            },
        }
        print(
            write_record(
                "near_duplicate_features", "near-duplicates of CIFAR-10 test images by a run's features", results
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
