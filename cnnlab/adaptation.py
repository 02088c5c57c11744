"""The config adapted to the data it meets: fewer images than the presets were made for, imbalanced classes.

Each policy returns the adapted config and a line per change (printed and saved with the run); keys the
user gave explicitly are kept, and nothing changes with `adapt` False.
"""

from __future__ import annotations

import math
from typing import Any

from .config import Config

MIN_STEPS = 600  # optimizer steps a training should take at least: the fast preset's on CIFAR-10 (7 x 87) ...
DESIGN_TRAIN = 45_000  # ... or the recipe's own, at the size the presets were made for (CIFAR-10's training split)
MIN_BATCH = 8
MAX_EPOCHS = 100  # ... but no more epochs than this, however few steps an epoch has


def adapt_to_dataset(
    cfg: Config, n_train: int, keep: frozenset[str] | set[str] = frozenset()
) -> tuple[Config, list[str]]:
    """The config adapted to a training set of `n_train` images, and a line per change.

    The presets assume CIFAR-10's 45,000 images; on a few hundred, batch 512 is one step per epoch and
    seven steps in all. Here the batch is at most an eighth of the training set (a power of two, >= 8),
    the learning rate follows the batch linearly (Goyal et al. 2017), and the epochs rise until the run
    takes MIN_STEPS steps, or the recipe's own count at CIFAR-10's size where that is fewer (at most
    MAX_EPOCHS), the warm-up and the early_size epochs keeping their share of them. Keys in `keep` (given
    explicitly by the user) are never changed; nothing changes with cfg.adapt False."""
    if not cfg.adapt:
        return cfg, []
    changes: dict[str, Any] = {}
    batch = cfg.batch_size
    if "batch_size" not in keep:
        cap = max(MIN_BATCH, 1 << max(0, (n_train // 16).bit_length() - 1))
        if batch > cap:
            batch = changes["batch_size"] = cap
            if "lr" not in keep:
                changes["lr"] = cfg.lr * batch / cfg.batch_size
    steps = max(1, n_train // batch)
    # a recipe of few long steps (fast94: 8 epochs of 25 steps of 2,000) keeps its own count where it was made
    min_steps = min(MIN_STEPS, cfg.epochs * max(1, DESIGN_TRAIN // cfg.batch_size))
    if "epochs" not in keep and cfg.epochs * steps < min_steps:
        changes["epochs"] = max(cfg.epochs, min(MAX_EPOCHS, -(-min_steps // steps)))
        for key in ("warmup_epochs", "early_epochs"):
            if key not in keep and getattr(cfg, key):
                changes[key] = round(getattr(cfg, key) * changes["epochs"] / cfg.epochs, 3)
    changes = {k: v for k, v in changes.items() if v != getattr(cfg, k)}
    if not changes:
        return cfg, []
    notes = [f"{key} {getattr(cfg, key):g} -> {value:g}" for key, value in changes.items()]
    line = (
        f"small training set ({n_train} images): "
        + ", ".join(notes)
        + f" ({max(1, n_train // batch) * changes.get('epochs', cfg.epochs)} steps); give these flags to choose "
        "otherwise, or --no-adapt"
    )
    return cfg.replace(**changes), [line]


# Largest over smallest class count of the training split above which the classes count as imbalanced (a
# choice, not a measured optimum): folders gathered by hand often differ by 2:1 and train as they are; above
# 3:1 the smallest class has under a third of the largest's share of each epoch.
IMBALANCE_RATIO = 3.0
# What an imbalanced training set gets by default (config key, value): chosen on a validation split by
# benchmarks/imbalance.py, at least as good as none in balanced accuracy (docs/data.md).
IMBALANCE_DEFAULT = ("sampler", "balanced")


def imbalance_ratio(counts: Any) -> float:
    """Largest over smallest of per-class image counts (inf when a class has none)."""
    counts = [int(n) for n in counts]
    if not counts:
        return 1.0
    return max(counts) / min(counts) if min(counts) > 0 else math.inf


def adapt_to_imbalance(
    cfg: Config, counts: Any, keep: frozenset[str] | set[str] = frozenset()
) -> tuple[Config, list[str]]:
    """The config adapted to a training split of these per-class image counts, and a line when it changed.

    Above IMBALANCE_RATIO, IMBALANCE_DEFAULT is set (the class-balanced sampler). Nothing changes when
    the user gave class_weight or sampler (in `keep`), when either is already set, or with cfg.adapt False."""
    ratio = imbalance_ratio(counts)
    if not cfg.adapt or ratio <= IMBALANCE_RATIO or {"class_weight", "sampler"} & set(keep):
        return cfg, []
    if cfg.class_weight != "none" or cfg.sampler != "uniform":
        return cfg, []
    key, value = IMBALANCE_DEFAULT
    line = (
        f"imbalanced training set (ratio {ratio:.1f}): {key} {getattr(cfg, key)} -> {value}; give "
        "--class-weight or --sampler to choose otherwise, or --no-adapt"
    )
    return cfg.replace(**{key: value}), [line]
