"""Small, pure statistics for comparing configurations over seeds: a mean's confidence interval, and
every cell of a sweep against the best one, the choice of the best accounted for."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict:
    """n, mean, sample std and the two-sided Student-t confidence interval of the mean."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci_low": None, "ci_high": None}
    mean = sum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci_low": None, "ci_high": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy import stats as _scipy  # here, not at import: scipy.stats takes a second to import

    half = _scipy.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def format_interval(summary: dict) -> str:
    """`mean [low, high]` in percent, from a summarize() of fractions; `-` when empty."""
    if not summary["n"]:
        return "-"
    if summary["ci_low"] is None:
        return f"{100 * summary['mean']:.2f}"
    return f"{100 * summary['mean']:.2f} [{100 * summary['ci_low']:.2f}, {100 * summary['ci_high']:.2f}]"


# --- comparing cells with the best ---------------------------------------------------------------
#
# The best cell is chosen by its mean on the same runs that are then tested, so each test "best vs
# cell i" is one of the pairwise comparisons among all k cells, picked after looking. Tukey's
# studentized range covers every pair at once: under the global null, the chance that the largest gap
# between two cell means (the best and the worst) exceeds q_(k, df) standard errors is exactly alpha
# (equal n, equal variances, normal runs), so "worse than best" is called falsely in at most alpha of
# sweeps however the best was picked. Where the cells share their runs' units (seeds, folds), the
# layout is a randomized block design: the units' effects (a seed's initialisation and data order, a
# fold's images) cancel in the residual variance of the two-way layout. With k-fold units the training
# sets of the folds overlap, so the folds' results are correlated: the variance of a cell's mean is
# Nadeau & Bengio's (2003) corrected one, s^2 (1/folds + n_test/n_train), after averaging each fold's
# seeds (the seeds share the fold assignment).


@dataclasses.dataclass(frozen=True)
class Layout:
    """Cell means and what their differences are measured against."""

    means: dict[str, float]
    mean_variance: dict[str, float]  # estimated variance of each cell's mean
    df: int  # degrees of freedom of the residual variance
    paired: bool  # True: two-way layout over the units the cells share
    units: int  # units (seeds, or folds) per cell in the paired layout; runs in all otherwise
    overlap: float  # the Nadeau-Bengio term n_test/n_train added to 1/n (0: none)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Every cell against the best: adjusted and unadjusted p-values (None: not tested)."""

    best: str | None
    method: str  # one sentence: the procedure, paired or not, the correction
    p_adjusted: dict[str, float | None]
    p_unadjusted: dict[str, float | None]
    statistic: dict[str, float]  # studentized range of each cell's gap to the best
    df: int | None
    tested: int  # the number of cells compared with the best


def layout(
    values: Mapping[str, Sequence[float]], units: Mapping[str, Sequence[tuple]] | None = None, folds: int = 0
) -> Layout | None:
    """The cells' means and the variances of their means, paired over the units the cells share when
    every cell has the same units (each once), else pooled within cells; None without residual degrees
    of freedom. `units`: each value's (seed, fold) per cell; `folds` > 1: k-fold units, whose seeds are
    averaged per fold and whose overlap is corrected for."""
    scored = {c: np.asarray(v, dtype=float) for c, v in values.items() if len(v)}
    overlap = 1.0 / (folds - 1) if folds > 1 else 0.0
    blocks = _blocks(scored, units, folds) if units is not None else None
    if blocks is not None:
        matrix = np.stack([blocks[c] for c in scored])
        k, n = matrix.shape
        df = (k - 1) * (n - 1)
        residual = matrix - matrix.mean(1, keepdims=True) - matrix.mean(0, keepdims=True) + matrix.mean()
        per_run, paired = (float((residual**2).sum()) / df if df else 0.0), True
        sizes = dict.fromkeys(scored, n)
    else:
        sizes = {c: len(v) for c, v in scored.items()}
        df = sum(sizes.values()) - len(scored)
        per_run = float(sum(((v - v.mean()) ** 2).sum() for v in scored.values())) / df if df > 0 else 0.0
        paired, n = False, sum(sizes.values())
    if df <= 0:
        return None
    return Layout(
        means={c: float(v.mean()) for c, v in scored.items()},
        mean_variance={c: per_run * (1.0 / sizes[c] + overlap) for c in scored},
        df=df,
        paired=paired,
        units=n,
        overlap=overlap,
    )


def _blocks(scored: dict[str, np.ndarray], units: Mapping[str, Sequence[tuple]], folds: int):
    # Each cell's values by unit, in one unit order, when every cell has the same units once each;
    # with k-fold units, each fold's values averaged over its seeds. None where the cells differ.
    keys = {c: [tuple(u) for u in units[c]] for c in scored}
    first = sorted(next(iter(keys.values())))
    if any(len(set(k)) != len(k) or sorted(k) != first for k in keys.values()):
        return None
    blocks = {}
    for cell, values in scored.items():
        by_unit = dict(zip(keys[cell], values))
        if folds > 1:
            fold_ids = sorted({u[1] for u in first})
            blocks[cell] = np.array([np.mean([by_unit[u] for u in first if u[1] == f]) for f in fold_ids])
        else:
            blocks[cell] = np.array([by_unit[u] for u in first])
    return blocks


def gaps(lay: Layout) -> dict[str, float]:
    """Each cell's largest studentized gap below another cell: max over j of (mean_j - mean_i) /
    sqrt((var_i + var_j) / 2), the studentized range's scale (Tukey-Kramer where the variances differ).
    The best cell's is <= 0."""
    out = {}
    for cell, mean in lay.means.items():
        worst = -math.inf
        for other, other_mean in lay.means.items():
            if other == cell:
                continue
            scale = math.sqrt((lay.mean_variance[cell] + lay.mean_variance[other]) / 2)
            diff = other_mean - mean
            worst = max(worst, diff / scale if scale > 0 else math.copysign(math.inf, diff) if diff else 0.0)
        out[cell] = worst
    return out


def compare_with_best(
    values: Mapping[str, Sequence[float]], units: Mapping[str, Sequence[tuple]] | None = None, folds: int = 0
) -> Comparison:
    """Each cell against the cell with the highest mean, the choice accounted for: Tukey's studentized
    range over the k cells (adjusted p), paired over shared units, k-fold overlap corrected (see above).
    The unadjusted p is the pair's own two-sided t-test on the same variance, for reference only."""
    from scipy import stats as _scipy

    scored = {c: v for c, v in values.items() if len(v)}
    best = max(scored, key=lambda c: float(np.mean(scored[c]))) if scored else None
    lay = layout(scored, units, folds) if len(scored) > 1 else None
    none = dict.fromkeys(values)
    if lay is None:
        return Comparison(best, describe(None, len(scored), folds), none, none, {}, None, 0)
    k, stat = len(lay.means), gaps(lay)
    adjusted, unadjusted = dict(none), dict(none)
    for cell in lay.means:
        if cell != best:
            adjusted[cell] = float(_scipy.studentized_range.sf(max(stat[cell], 0.0), k, lay.df))
            unadjusted[cell] = float(2 * _scipy.t.sf(abs(stat[cell]) / math.sqrt(2), lay.df))
    return Comparison(best, describe(lay, k, folds), adjusted, unadjusted, stat, lay.df, k - 1)


def describe(lay: Layout | None, cells: int, folds: int = 0) -> str:
    """What compare_with_best did, in one sentence."""
    if lay is None:
        return "no test: too few runs for a variance" if cells > 1 else "no test: one cell"
    how = (
        f"paired on the {lay.units} {'folds' if folds > 1 else 'seeds'} the cells share (two-way layout)"
        if lay.paired
        else "unpaired (pooled within cells)"
    )
    text = f"Tukey's studentized range over the {cells} cells (the best chosen on the same runs), {how}, df={lay.df}"
    if lay.overlap:
        text += f"; fold means corrected for overlapping training sets (Nadeau-Bengio: 1/n + {lay.overlap:.3g})"
    return text
