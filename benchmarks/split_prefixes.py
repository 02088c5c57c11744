"""Is the validation split representative of the folder? Per class and per file-name prefix (the name
before its trailing number, e.g. `airbus` of `airbus_s_000012.png`: CIFAR-10's images are named by the
search term that found them), the prefix's share of the class's validation images minus its share of the
class's training images, in percentage points, under the keras rule (the first files in sorted order) and
under the default config's split. No image is decoded: the folder is scanned and split as training splits it.

    python benchmarks/split_prefixes.py ../shared/datasets/cifar10 [--seeds 10]

Prints a line per class (the largest absolute difference and its prefix, each rule) and, for --seeds other
split seeds, the worst difference over every class; writes benchmarks/records/split_prefixes.json.

Measured 2026-12-07 on CIFAR-10's train/ (50,000 images, 10 classes, 389 prefixes, val_fraction 0.1; a
2-core AMD EPYC): keras worst 88.2 points (airplane/`airbus`: 441 of its 500 validation images, none in
training), 32.6 to 88.2 in every class; the default (random, split_seed 0) worst 2.7 points
(deer/`odocoileus_hemionus`); split seeds 0-9: worst 2.7 to 3.7.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter

import numpy as np
from record import write_record

from cnnlab.config import Config
from cnnlab.data import split_indices
from cnnlab.data.folder import scan_folder

ACCEPTED_POINTS = 6.0  # every prefix's validation share within this of its training share
_NUMBERED = re.compile(r"^(.*?)(?:_s)?_\d+$")  # `airbus_s_000012` -> `airbus`


def prefix_of(file: str) -> str:
    stem = os.path.splitext(os.path.basename(file))[0]
    match = _NUMBERED.match(stem)
    return match[1] if match else stem


def worst_prefix(prefixes: list[str], val: np.ndarray, train: np.ndarray) -> tuple[float, str]:
    """(largest |share in val - share in train| in points, its prefix) of one class's files."""
    in_val, in_train = Counter(prefixes[i] for i in val), Counter(prefixes[i] for i in train)
    gaps = {p: 100 * abs(in_val[p] / len(val) - in_train[p] / len(train)) for p in set(in_val) | set(in_train)}
    prefix = max(gaps, key=gaps.get)
    return gaps[prefix], prefix


def per_class(classes, labels, prefixes, fraction, mode, seed) -> list[tuple[float, str]]:
    train, val = split_indices(labels, fraction, mode, seed)
    rows = []
    for index in range(len(classes)):
        rows.append(worst_prefix(prefixes, val[labels[val] == index], train[labels[train] == index]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a dataset root holding train/<class>/ (or the class folders themselves)")
    parser.add_argument("--seeds", type=int, default=10, help="split seeds 0..N-1 to report the worst of")
    args = parser.parse_args()
    root = os.path.join(args.data, "train") if os.path.isdir(os.path.join(args.data, "train")) else args.data
    scan = scan_folder(root)
    labels, prefixes = np.asarray(scan.labels), [prefix_of(f) for f in scan.files]
    default = Config()
    keras = per_class(scan.classes, labels, prefixes, default.val_fraction, "keras", 0)
    chosen = per_class(scan.classes, labels, prefixes, default.val_fraction, default.split, default.split_seed)
    rule = f"split {default.split}, split_seed {default.split_seed}, val_fraction {default.val_fraction:g}"
    print(f"{root}: {len(labels)} images, {len(set(prefixes))} prefixes; |validation share - training share|")
    print(f"{'class':<12} {'keras':>7}  {'worst prefix':<24} {'default':>7}  worst prefix  ({rule})")
    rows = []
    for name, (k_gap, k_prefix), (d_gap, d_prefix) in zip(scan.classes, keras, chosen):
        print(f"{name:<12} {k_gap:7.1f}  {k_prefix:<24} {d_gap:7.1f}  {d_prefix}")
        rows.append([name, round(k_gap, 2), k_prefix, round(d_gap, 2), d_prefix])
    seeds = [
        round(max(gap for gap, _ in per_class(scan.classes, labels, prefixes, default.val_fraction, "random", s)), 2)
        for s in range(args.seeds)
    ]
    k_worst, d_worst = max(range(len(rows)), key=lambda i: rows[i][1]), max(range(len(rows)), key=lambda i: rows[i][3])
    print(
        f"worst: keras {rows[k_worst][1]:.1f} ({rows[k_worst][0]}/{rows[k_worst][2]}), default {rows[d_worst][3]:.1f} "
        f"({rows[d_worst][0]}/{rows[d_worst][4]}); random split seeds 0-{args.seeds - 1}: {min(seeds)} to {max(seeds)}"
    )
    accepted = rows[d_worst][3] <= ACCEPTED_POINTS
    print(f"every prefix within {ACCEPTED_POINTS:g} points with the defaults: {'yes' if accepted else 'NO'}")
    results = {
        "tables": {
            "largest |validation share - training share| of a file-name prefix, per class, points": {
                "columns": ["class", "keras", "its prefix", "default", "its prefix"],
                "rows": rows,
            }
        },
        "images": len(labels),
        "prefixes": len(set(prefixes)),
        "default_rule": rule,
        "keras_worst_points": rows[k_worst][1],
        "keras_worst": f"{rows[k_worst][0]}/{rows[k_worst][2]}",
        "default_worst_points": rows[d_worst][3],
        "default_worst": f"{rows[d_worst][0]}/{rows[d_worst][4]}",
        "random_split_seeds_worst_points": seeds,
        "accepted_points": ACCEPTED_POINTS,
        "accepted": accepted,
    }
    print(f"wrote {write_record('split_prefixes', 'validation vs training share of each file-name prefix', results)}")


if __name__ == "__main__":
    main()
