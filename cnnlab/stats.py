"""Small, pure statistics for comparing configurations over seeds."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence


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


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        return 1.0 if a[0] == b[0] else 0.0
    from scipy import stats as _scipy

    with warnings.catch_warnings():  # near-identical samples: scipy warns of lost precision, p is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(_scipy.ttest_ind(a, b, equal_var=False).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of p-values for the multiple comparisons made together (the None
    entries, tests not made, are left out and kept). scipy offers Benjamini-Hochberg, not Holm."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted, running = list(p_values), 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))  # monotone: never below a smaller p's
        adjusted[i] = running
    return adjusted


def format_interval(summary: dict) -> str:
    """`mean [low, high]` in percent, from a summarize() of fractions; `-` when empty."""
    if not summary["n"]:
        return "-"
    if summary["ci_low"] is None:
        return f"{100 * summary['mean']:.2f}"
    return f"{100 * summary['mean']:.2f} [{100 * summary['ci_low']:.2f}, {100 * summary['ci_high']:.2f}]"
