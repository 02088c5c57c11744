"""A sweep's results: per cell the statistics over seeds (and folds), the verdicts against the best cell
on validation, and the table, results.json, results.csv and heatmap.png made from them.
"""

from __future__ import annotations

import os

from .. import runs
from ..stats import Comparison, compare_with_best, format_interval, summarize
from ..studies import open_study
from .planning import cell_name, cells_of, plan, seed_values
from .state import load_select_metric, load_spec, unit_states

RESULTS_JSON, RESULTS_CSV, HEATMAP = "results.json", "results.csv", "heatmap.png"
METRIC_NAMES = {"val_accuracy": "accuracy", "val_balanced_accuracy": "balanced accuracy", "val_macro_f1": "macro-F1"}


METRIC_SHORT = {"val_accuracy": "val acc", "val_balanced_accuracy": "val bal acc", "val_macro_f1": "val macro-F1"}


def _collect(study, grid: dict[str, list]) -> dict[str, dict[str, list]]:
    """Per cell: the completed trials' selected values, test accuracies, times, seeds, folds and runs."""
    import optuna

    per_cell: dict[str, dict[str, list]] = {
        cell_name(c): {k: [] for k in ("val", "test", "time", "order", "runs")} for c in cells_of(grid)
    }
    for trial in study.get_trials(deepcopy=False):
        cell = trial.user_attrs.get("cell")
        if trial.state == optuna.trial.TrialState.COMPLETE and cell in per_cell:
            per_cell[cell]["val"].append(trial.value)
            per_cell[cell]["test"].append(trial.user_attrs.get("test_accuracy"))
            per_cell[cell]["time"].append(trial.user_attrs.get("train_time_s"))
            per_cell[cell]["order"].append((trial.user_attrs.get("seed"), trial.user_attrs.get("fold") or 0))
            per_cell[cell]["runs"].append(trial.user_attrs.get("run", trial.user_attrs.get("unit")))
    return per_cell


def _row(cell: str, vals: dict[str, list]) -> dict:
    """A cell's row: its values in (seed, fold) order, summarised (mean, std, 95% CI over folds x seeds)."""
    order = sorted(range(len(vals["order"])), key=lambda i: vals["order"][i])
    val = [vals["val"][i] for i in order]
    test = [vals["test"][i] for i in order if vals["test"][i] is not None]
    return {
        "cell": cell,
        "val": summarize(val),
        "test": summarize(test),
        "train_time_s": summarize([vals["time"][i] for i in order]),
        "val_values": val,
        "test_values": test,
        "runs": [vals["runs"][i] for i in order],  # runs/<name>, by seed then fold
        "units": [list(vals["order"][i]) for i in order],  # (seed, fold) of each value
    }


def _verdicts(rows: list[dict], folds: int) -> Comparison:
    """Every cell against the best on validation, the choice accounted for (stats.compare_with_best:
    Tukey's studentized range, paired on the (seed, fold) units the cells share): sets each row's
    adjusted and unadjusted p-values and its verdict."""
    values = {r["cell"]: r["val_values"] for r in rows}
    units = {r["cell"]: r["units"] for r in rows}
    comparison = compare_with_best(values, units, folds)
    for row in rows:
        p = row["p_value"] = comparison.p_adjusted.get(row["cell"])
        row["p_unadjusted"] = comparison.p_unadjusted.get(row["cell"])
        if not row["val"]["n"]:
            row["verdict"] = "no results yet"
        elif row["cell"] == comparison.best:
            row["verdict"] = "best (on validation)"
        elif p is None:
            row["verdict"] = "too few seeds to test"
        elif p < 0.05:
            row["verdict"] = f"worse than best (adj. p={p:.3f})" if p >= 0.001 else "worse than best (adj. p<0.001)"
        else:
            row["verdict"] = f"not distinguishable from best (adj. p={p:.2f})"
    return comparison


def results(out: str, storage: str | None = None, study_name: str = "cnnlab", study=None) -> dict:
    """Per cell: n (folds x seeds), mean, std, 95% CI of the selected validation metric, of test accuracy
    and of training time; the best cell on the validation metric and Welch's test of it against every
    other cell. The test split never takes part in the choice. `study`: one already open (a table shown
    after every training reads the new trials only), else opened from out/storage/study_name."""
    study = study or open_study(out, storage, study_name)
    base, grid, seeds = load_spec(out, storage, study_name, study)
    units, _ = plan(base, grid, seeds)
    states = unit_states(study, units)
    failed = [
        {"cell": cell_name(unit.cell(epochs)), "seed": unit.seed, "fold": unit.fold, "reason": states[unit.key][1]}
        for unit in units
        if states[unit.key][0] == "failed"
        for epochs in unit.serves
    ]
    rows = [_row(cell, vals) for cell, vals in _collect(study, grid).items()]
    comparison = _verdicts(rows, base.folds)
    best = next((r for r in rows if r["cell"] == comparison.best), None)
    return {
        "grid": grid,
        "seeds": seeds,
        "seed_values": seed_values(base, seeds),
        "folds": base.folds,
        "select_metric": load_select_metric(out, storage, study_name, study),
        "rows": rows,
        "best": best["cell"] if best else None,
        "best_test": best["test"] if best else None,
        "failed": failed,
        "comparisons": comparison.tested,
        "comparison": {"method": comparison.method, "df": comparison.df, "alpha": 0.05},
    }


def p_value_note(res: dict) -> str:
    """What the p-values of a results table are."""
    metric = METRIC_NAMES.get(res.get("select_metric", "val_accuracy"), "accuracy")
    method = (res.get("comparison") or {}).get("method")
    if method is None:  # results.json of an older cnnlab
        return f"p: Welch's t-test of each cell against the best on validation {metric}, Holm-corrected"
    return f"adj. p: each cell against the best on validation {metric}, adjusted for choosing the best: {method}"


def sample_note(res: dict) -> str:
    """What n counts: seeds, or folds x seeds."""
    seeds = len(res.get("seed_values") or []) or res["seeds"]
    if res.get("folds"):
        return f"n = {res['folds']} folds x {seeds} seed(s) per cell; mean and 95% CI over them"
    return f"n = {seeds} seed(s) per cell; mean and 95% CI over them"


def format_table(res: dict) -> str:
    metric = res.get("select_metric", "val_accuracy")
    label = f"{METRIC_SHORT.get(metric, metric)} % [95% CI]"
    head = f"{'cell':<32}{'n':>3}  {label:<26}{'test acc % [95% CI]':<26}{'train s':>9}  verdict"
    lines = [head, "-" * len(head)]
    for row in res["rows"]:
        time_s = row["train_time_s"]["mean"]
        lines.append(
            f"{row['cell']:<32}{row['val']['n']:>3}  {format_interval(row['val']):<26}{format_interval(row['test']):<26}"
            f"{'' if time_s is None else f'{time_s:.0f}':>9}  {row['verdict']}"
        )
    lines.append(sample_note(res))
    if res["best"]:
        lines.append(
            f"chosen on validation: {res['best']} (by {metric}); "
            f"its test accuracy: {format_interval(res['best_test'])}%"
        )
        lines.append(p_value_note(res))
    for fail in res["failed"]:
        fold = "" if fail.get("fold") is None else f" fold {fail['fold']}"
        lines.append(f"failed: {fail['cell']} seed {fail['seed']}{fold}: {fail['reason']}")
    return "\n".join(lines)


CSV_COLUMNS = [
    "cell",
    "n",
    "val_mean",
    "val_std",
    "val_ci_low",
    "val_ci_high",
    "test_mean",
    "test_std",
    "test_ci_low",
    "test_ci_high",
    "train_time_s_mean",
    "p_value_vs_best_adjusted",
    "p_value_vs_best_unadjusted",
    "comparison",
    "verdict",
    "select_metric",
    "folds",
    "seeds",
]


def save_results(out: str, res: dict) -> None:
    """results.json, results.csv (one row a cell, CSV_COLUMNS) and, for a 2-key grid, heatmap.png in `out`."""
    import csv
    import io

    runs.write_json(os.path.join(out, RESULTS_JSON), res)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for r in res["rows"]:
        writer.writerow(
            [
                r["cell"],
                r["val"]["n"],
                *(r[part][key] for part in ("val", "test") for key in ("mean", "std", "ci_low", "ci_high")),
                r["train_time_s"]["mean"],
                r["p_value"],
                r["p_unadjusted"],
                (res.get("comparison") or {}).get("method"),
                r["verdict"],
                res.get("select_metric", "val_accuracy"),
                res.get("folds") or 0,
                res["seeds"],
            ]
        )
    runs.write_atomic(os.path.join(out, RESULTS_CSV), buffer.getvalue())
    if len(res["grid"]) == 2:
        _save_heatmap(out, res)


def _save_heatmap(out: str, res: dict) -> None:
    """heatmap.png: the mean validation metric of each cell of a 2-key grid."""
    from ..plots import plot_heatmap

    (row_key, row_values), (col_key, col_values) = res["grid"].items()
    means = {r["cell"]: r["val"]["mean"] for r in res["rows"]}
    matrix = [[means.get(cell_name({row_key: rv, col_key: cv})) for cv in col_values] for rv in row_values]
    plot_heatmap(
        matrix,
        row_key,
        row_values,
        col_key,
        col_values,
        os.path.join(out, HEATMAP),
        f"mean validation {METRIC_NAMES.get(res.get('select_metric'), 'accuracy')}",
    )
