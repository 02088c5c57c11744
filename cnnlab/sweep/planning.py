"""Planning a sweep: the grid, its cells, and the trainings (units) that serve them.

Shared epochs: when the learning rate does not depend on the total number of epochs (schedule=constant,
as in the study), the cells that differ only in `epochs` are served by ONE training to the largest count,
evaluated after each requested count. Under --folds every cell trains on each fold.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..studies import refuse_data_keys, require_splits, require_validation, training_counts_of

NAMED_GRIDS = {"seed-grid": {"batch_size": [100, 200, 250], "epochs": [20, 25, 30]}}
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9._=+-]{0,79}")  # lower case: distinct also where case is not


def parse_grid(specs: list[str], base: Config) -> dict[str, list]:
    """`key=v1,v2` items (or a named grid) -> {key: [typed values]}, each value checked by the Config."""
    grid: dict[str, list] = {}
    for spec in specs:
        if spec in NAMED_GRIDS:
            grid.update(NAMED_GRIDS[spec])
            continue
        key, sep, values = spec.partition("=")
        if not sep or not values:
            raise ConfigError(f"--grid {spec!r}: expected KEY=V1,V2,... or one of {', '.join(NAMED_GRIDS)}")
        key = key.strip().replace("-", "_")
        if key in ("folds", "fold", "fold_seed"):
            raise ConfigError(f"--grid {key}: use --folds K for k-fold cross-validation (every cell on every fold)")
        refuse_data_keys([key], "--grid", "sweep")
        grid[key] = [getattr(base.replace(**{key: v.strip()}), key) for v in values.split(",")]
    if not grid:
        raise ConfigError("a sweep needs at least one --grid")
    if "seed" in grid:
        raise ConfigError("--grid seed: use --seeds N for seeds")
    return grid


def cells_of(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def cell_name(cell: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in cell.items())


@dataclass(frozen=True)
class Unit:
    """One training: the cell values (epochs = the largest served), the seed, the epoch counts at
    which it is evaluated, one per cell it serves, and under --folds the fold held out for validation."""

    values: tuple[tuple[str, Any], ...]
    seed: int
    serves: tuple[int, ...]
    fold: int | None = None

    @property
    def key(self) -> str:
        return (
            "_".join(f"{k}-{v}" for k, v in self.values)
            + f"_seed-{self.seed}"
            + ("" if self.fold is None else f"_fold-{self.fold}")
        )

    @property
    def dirname(self) -> str:
        """Its run directory's name in SWEEP_DIR/runs/: the key itself when that is a plain file name,
        else a slug of it and a hash of the values (grid values are anything, e.g. paths with `/` and
        `..`: a name is never a path, and at most 93 characters). The values are in NAME.json beside it."""
        if SAFE_NAME.fullmatch(self.key) and ".." not in self.key:
            return self.key
        slug = re.sub(r"\.{2,}", "_", re.sub(r"[^A-Za-z0-9._=+-]+", "_", self.key))[:80].strip("._-")
        named = [self.values, self.seed] + ([] if self.fold is None else [self.fold])
        digest = hashlib.sha256(json.dumps(named).encode()).hexdigest()[:12]
        return f"{slug or 'unit'}-{digest}"

    def cell(self, epochs: int) -> dict:
        """The grid cell served at `epochs` (epochs is part of the cell only when the grid has it)."""
        cell = dict(self.values)
        if "epochs" in cell:
            cell["epochs"] = epochs
        return cell


def seed_values(base: Config, seeds: int) -> list[int]:
    """The seeds of a sweep: `seeds` of them from the config's seed on (--seed S --seeds N: S..S+N-1)."""
    return list(range(base.seed, base.seed + seeds))


def cell_configs(base: Config, grid: dict[str, list]) -> dict[str, Config]:
    """The config of each cell, keyed by how a message names it (only a grid over val_fraction needs it)."""
    return {
        f" (in the grid cell {cell_name(c)})" if "val_fraction" in c else "": base.replace(**c) for c in cells_of(grid)
    }


def plan(base: Config, grid: dict[str, list], seeds: int) -> tuple[list[Unit], str]:
    """The trainings to run and why epochs are or are not shared: per seed, per fold (base.folds; None
    without folds), one per group of cells; a grid without a validation split is refused (the best cell
    is chosen on validation, never on the test split)."""
    cells = cells_of(grid)
    require_validation(cell_configs(base, grid))
    share = "epochs" in grid and len(grid["epochs"]) > 1
    reason = "epochs shared: the schedule is constant, so a longer run passes through the shorter runs' states"
    if share:
        schedules = {base.replace(**c).schedule for c in cells}
        if schedules != {"constant"}:
            share = False
            reason = (
                f"epochs not shared: schedule {'/'.join(sorted(schedules - {'constant'}))} depends on the "
                "total number of epochs, so each length needs its own training"
            )
    elif "epochs" not in grid:
        reason = "no epochs in the grid: one training per cell and seed"
    units: list[Unit] = []
    groups: dict[tuple, list[int]] = {}
    for cell in cells:
        rest = tuple((k, v) for k, v in cell.items() if not (share and k == "epochs"))
        epochs = cell.get("epochs", base.epochs)
        groups.setdefault(rest, []).append(epochs)
    folds = list(range(base.folds)) if base.folds else [None]
    for seed, fold, (rest, epochs_list) in itertools.product(seed_values(base, seeds), folds, groups.items()):
        if share:
            units.append(Unit(rest + (("epochs", max(epochs_list)),), seed, tuple(sorted(set(epochs_list))), fold))
        else:
            units.append(Unit(rest, seed, (dict(rest).get("epochs", base.epochs),), fold))
    return units, reason


def describe_plan(units: list[Unit], reason: str) -> str:
    seeds = sorted({u.seed for u in units})
    folds = len({u.fold for u in units if u.fold is not None})
    per_seed = [u for u in units if u.seed == seeds[0] and u.fold in (None, 0)]
    epochs = sum(dict(u.values).get("epochs", u.serves[-1]) for u in per_seed)
    served = sum(len(u.serves) for u in per_seed)
    each = f"{folds} folds x {len(seeds)} seed(s)" if folds else f"{len(seeds)} seed(s)"
    lines = [
        reason,
        f"{len(per_seed)} training(s) per {'fold and ' if folds else ''}seed ({epochs} epochs) serving "
        f"{served} cell(s); {each}: {len(units)} training(s) in all",
        f"seeds: {', '.join(map(str, seeds))}",
    ]
    if folds:
        lines.append(
            f"folds: {folds}, stratified, drawn with seed {seeds[0]} (the same for every cell and seed); "
            "each fold's held-out part is its validation split (val_fraction ignored), the test split untouched"
        )
    for u in per_seed:
        lines.append(
            f"  train {', '.join(f'{k}={v}' for k, v in u.values)} -> evaluated at epochs "
            f"{', '.join(map(str, u.serves))}"
        )
    return "\n".join(lines)


def check_data(base: Config, grid: dict[str, list]) -> None:
    """Refuse, in one line, a grid whose validation splits cannot be made from the training images
    (a class with fewer images than folds, or none for validation): never chosen on the test split."""
    require_splits(cell_configs(base, grid), training_counts_of(base))
