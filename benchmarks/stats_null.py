"""How often does a sweep call a cell "worse than best" when no cell is? Simulated sweeps under the global
null (every cell truly equal) and with one cell truly worse, for cnnlab's comparison before and after
issue 29:

- before: the best cell picked by its mean, then Welch's t-test (unpaired) of it against every other cell
  on the same runs, Holm-corrected over those k - 1 tests;
- after: `cnnlab.stats.compare_with_best`: Tukey's studentized range over the k cells (the choice of the
  best accounted for), paired on the units the cells share, k-fold overlap corrected (Nadeau & Bengio).

Runs have total variance 1 (one run-to-run standard deviation = 1). Dependence settings:
- independent: every run its own noise;
- shared seeds: half of a run's variance is its seed's, shared by the cells (same initialisation and
  data order);
- 5-fold x 2 seeds: 0.3 of the variance is the (seed, fold) unit's, shared by the cells; 0.35 is the
  cell's on that fold, correlated 0.2 between folds (overlapping training sets: Nadeau & Bengio's
  n_test/n_train = 1/4 = rho / (1 - rho)) and shared by the fold's two seeds; 0.35 is the run's own.

    python benchmarks/stats_null.py                  # 3,000 null sweeps and 1,000 a power point per setting
    python benchmarks/stats_null.py --null 300 --power 100 --no-record   # a quick look

Writes benchmarks/records/stats_null.json; docs/statistics.md shows its table (tools/benchmarks_page.py).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

from cnnlab.stats import compare_with_best, gaps, layout  # noqa: E402

ALPHA = 0.05
DELTAS = (0.5, 1.0, 2.0)  # true shortfall of one cell, in run-to-run standard deviations


def simulate(rng: np.random.Generator, sims: int, cells: int, runs: int, dependence: str) -> tuple[np.ndarray, list]:
    """(sims, cells, runs) values with mean 0 and variance 1 per run, and each run's (seed, fold)."""
    if dependence == "independent":
        return rng.standard_normal((sims, cells, runs)), [(s, 0) for s in range(runs)]
    if dependence == "shared seeds":
        seed = rng.standard_normal((sims, 1, runs))
        own = rng.standard_normal((sims, cells, runs))
        return math.sqrt(0.5) * (seed + own), [(s, 0) for s in range(runs)]
    folds, seeds = 5, runs // 5
    unit = rng.standard_normal((sims, 1, seeds, folds))
    rho = 0.2  # between folds of one cell
    cell_fold = math.sqrt(rho) * rng.standard_normal((sims, cells, 1, 1)) + math.sqrt(1 - rho) * rng.standard_normal(
        (sims, cells, 1, folds)
    )
    own = rng.standard_normal((sims, cells, seeds, folds))
    values = math.sqrt(0.3) * unit + math.sqrt(0.35) * cell_fold + math.sqrt(0.35) * own
    return values.reshape(sims, cells, runs), [(s, f) for s in range(seeds) for f in range(folds)]


def before(values: np.ndarray) -> np.ndarray:
    """Today's procedure, vectorised over sweeps: (sims, cells) True where a cell is called worse."""
    sims, cells, n = values.shape
    means, var = values.mean(2), values.var(2, ddof=1) / n
    best = means.argmax(1)
    mb, vb = means[np.arange(sims), best][:, None], var[np.arange(sims), best][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mb - means) / np.sqrt(vb + var)
        df = (vb + var) ** 2 / (vb**2 / (n - 1) + var**2 / (n - 1))
    p = 2 * stats.t.sf(np.abs(t), df)
    p[np.arange(sims), best] = np.inf  # not tested
    order = np.argsort(p, 1)
    ranked = np.take_along_axis(p, order, 1)[:, : cells - 1]
    holm = np.maximum.accumulate(np.minimum(1.0, ranked * (cells - 1 - np.arange(cells - 1))), 1)
    called = np.zeros((sims, cells), bool)
    np.put_along_axis(called, order[:, : cells - 1], holm < ALPHA, 1)
    return called


@functools.cache
def critical(cells: int, df: int) -> float:
    return float(stats.studentized_range.ppf(1 - ALPHA, cells, df))


def after(values: np.ndarray, units: list, folds: int) -> np.ndarray:
    """cnnlab's procedure: a cell is called worse when its adjusted p < alpha, i.e. its studentized gap to
    the best exceeds the studentized range's 1 - alpha quantile (the same decision, without a p per cell)."""
    sims, cells, _ = values.shape
    names = [f"c{i}" for i in range(cells)]
    called = np.zeros((sims, cells), bool)
    for s in range(sims):
        lay = layout(dict(zip(names, values[s])), dict.fromkeys(names, units), folds)
        gap = gaps(lay)
        called[s] = [gap[c] > critical(cells, lay.df) for c in names]
    return called


def check_decisions(values: np.ndarray, units: list, folds: int, called: np.ndarray) -> None:
    # The shortcut above against compare_with_best's own p-values, on a few sweeps.
    names = [f"c{i}" for i in range(values.shape[1])]
    for s in range(min(20, len(values))):
        comp = compare_with_best(dict(zip(names, values[s])), dict.fromkeys(names, units), folds)
        own = [p is not None and p < ALPHA for p in comp.p_adjusted.values()]
        assert own == list(called[s]), (s, comp)


def setting(rng: np.random.Generator, cells: int, runs: int, dependence: str, null: int, power: int) -> dict:
    folds = 5 if dependence.startswith("5-fold") else 0
    values, units = simulate(rng, null, cells, runs, dependence)
    new = after(values, units, folds)
    check_decisions(values, units, folds, new)
    rate = {"before": float(before(values).any(1).mean()), "after": float(new.any(1).mean())}
    errors = {k: math.sqrt(max(v, 1 / null) * (1 - v) / null) for k, v in rate.items()}
    powers = {}
    for delta in DELTAS:
        values, _ = simulate(rng, power, cells, runs, dependence)
        values[:, 0] -= delta
        powers[str(delta)] = {
            "before": float(before(values)[:, 0].mean()),
            "after": float(after(values, units, folds)[:, 0].mean()),
        }
    return {
        "cells": cells,
        "runs": runs,
        "dependence": dependence,
        "false_worse": rate,
        "mc_error": errors["after"],
        "mc_error_before": errors["before"],
        "power": powers,
        "sweeps": {"null": null, "power": power},
    }


def table(settings: list[dict]) -> dict:
    columns = ["cells", "runs", "dependence", "false 'worse' before", "after (± MC error)"]
    columns += [f"power at {d} SD before / after" for d in DELTAS]
    rows = []
    for s in settings:
        row = [s["cells"], s["runs"], s["dependence"], f"{100 * s['false_worse']['before']:.1f}%"]
        row.append(f"{100 * s['false_worse']['after']:.1f}% ± {100 * s['mc_error']:.1f}")
        row += [f"{100 * s['power'][str(d)]['before']:.0f}% / {100 * s['power'][str(d)]['after']:.0f}%" for d in DELTAS]
        rows.append(row)
    return {"columns": columns, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null", type=int, default=3000, help="simulated sweeps per setting under the null")
    parser.add_argument("--power", type=int, default=1000, help="simulated sweeps per setting and difference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    grid = [(k, n, d) for d in ("independent", "shared seeds") for k in (2, 3, 9, 16) for n in (3, 5, 10)]
    grid += [(k, 10, "5-fold x 2 seeds") for k in (2, 3, 9, 16)]
    settings = []
    for cells, runs, dependence in grid:
        settings.append(setting(rng, cells, runs, dependence, args.null, args.power))
        s = settings[-1]
        print(
            f"{cells:>3} cells x {runs:>2} runs, {dependence:<17} false 'worse': before "
            f"{100 * s['false_worse']['before']:5.1f}%, after {100 * s['false_worse']['after']:4.1f}% "
            f"(± {100 * s['mc_error']:.1f}); power at 1 SD {100 * s['power']['1.0']['before']:.0f}% -> "
            f"{100 * s['power']['1.0']['after']:.0f}%",
            flush=True,
        )
    worst = max(s["false_worse"]["after"] - 2 * s["mc_error"] for s in settings)
    print(f"largest false 'worse' rate after, less twice its MC error: {100 * worst:.1f}% (bound: {100 * ALPHA:.0f}%)")
    if not args.no_record:
        results = {
            "alpha": ALPHA,
            "settings": settings,
            "tables": {"false 'worse' under the global null": table(settings)},
        }
        path = write_record(
            "stats_null", "false 'worse than best' rate and power of the sweep comparison, simulated", results
        )
        print(f"wrote {path}")
    return 0 if worst <= ALPHA else 1


if __name__ == "__main__":
    sys.exit(main())
