"""Sweeps: a grid of Config values x seeds, on Optuna, resumable, shared by worker processes.

Each (cell, seed) is one trial of one Optuna study kept in SWEEP_DIR/optuna.journal (Optuna's journal
file storage, safe for several processes on one machine) or in a database (--storage URL, e.g.
PostgreSQL, for workers on several machines), so optuna-dashboard and Optuna's own tools open a
cnnlab sweep. Shared epochs: when the learning rate does not depend on the total number of
epochs (schedule=constant, as in the study), the cells that differ only in `epochs` are served by ONE
training to the largest count, evaluated (validation and test) after each requested count: the
study's 3x3 grid costs 3 trainings of 30 epochs per seed instead of 9 (90 epochs instead of 225).
k-fold cross-validation (--folds K): every cell trains on each of K stratified folds of the training
images (seeded by the sweep's seed, so every cell and seed sees the same folds), the fold's held-out
part its validation split; the statistics are then over folds x seeds. Cells are chosen on a
validation metric (--select-metric), never on the test split.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from . import runs, tracking
from .config import Config, saved_config
from .device import select_cuda_device
from .errors import CnnlabError, ConfigError, Interrupted
from .pipeline import resume_run, train_run
from .plots import plot_curves
from .stats import Comparison, compare_with_best, format_interval, summarize
from .studies import (
    STORAGE_ENV,
    Claim,
    choose_select_metric,
    claim,
    fail_reason,
    given_up,
    is_real_failure,
    mark_worker,
    open_study,
    prepare_dir,
    refuse_data_keys,
    require_splits,
    require_validation,
    retried,
    selection,
    tell_selected,
    training_counts_of,
    where,
    work_loop,
)

NAMED_GRIDS = {"seed-grid": {"batch_size": [100, 200, 250], "epochs": [20, 25, 30]}}
SPEC, RESULTS_JSON, RESULTS_CSV, HEATMAP = "sweep.json", "results.json", "results.csv", "heatmap.png"
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


# --- the sweep directory --------------------------------------------------------------------------


def create_sweep(
    out: str,
    base: Config,
    grid: dict[str, list],
    seeds: int,
    storage: str | None = None,
    study_name: str = "cnnlab",
    select_metric: str = "val_accuracy",
) -> dict:
    """Write SWEEP_DIR/sweep.json and the spec into the study, or check that an existing sweep is the same.
    The cells are compared on `select_metric` (a validation metric of the history)."""
    refuse_data_keys(grid, "--grid", "sweep")
    plan(base, grid, seeds)  # refuses a grid that cannot run before anything is written
    check_data(base, grid)
    choose_select_metric(select_metric, None)  # a known metric
    spec = runs.json_round_trip(
        {"config": base.to_dict(), "grid": grid, "seeds": seeds, "select_metric": select_metric}
    )
    path = os.path.join(out, SPEC)
    prepare_dir(out, SPEC, spec, "sweep")
    study = open_study(out, storage, study_name)
    saved = study.user_attrs.get("cnnlab_spec")
    if saved is None:
        study.set_user_attr("cnnlab_spec", spec)
    elif saved != spec:
        raise CnnlabError(f"{where(out, storage)}: the study holds a different sweep; use another storage or study")
    if not os.path.exists(path):
        runs.write_json(path, spec)
    return spec


def load_spec(
    out: str, storage: str | None = None, study_name: str = "cnnlab", study=None
) -> tuple[Config, dict[str, list], int]:
    """The sweep's config, grid and seeds, from `study` (None: opened from out/storage/study_name)."""
    spec = (study or open_study(out, storage, study_name)).user_attrs.get("cnnlab_spec")
    if spec is None:
        raise CnnlabError(f"{where(out, storage)}: no cnnlab sweep there yet; start it with `cnnlab sweep --grid ...`")
    return saved_config(spec["config"]), spec["grid"], spec["seeds"]  # the defaults it was created under


def load_select_metric(out: str, storage: str | None = None, study_name: str = "cnnlab", study=None) -> str:
    """The metric the sweep's cells are compared on (sweeps made before the choice existed: accuracy)."""
    spec = (study or open_study(out, storage, study_name)).user_attrs.get("cnnlab_spec", {})
    return spec.get("select_metric", "val_accuracy")


def _unit_states(study, units: list[Unit]) -> dict[str, tuple[str, str | None]]:
    """unit key -> (done | running | failed | todo, the reason of a failure), from the study's trials
    (dead workers' trials already marked failed by fail_dead_trials)."""
    import optuna

    by_unit: dict[str, list] = {}
    for trial in study.get_trials(deepcopy=False):
        by_unit.setdefault(trial.user_attrs.get("unit", ""), []).append(trial)
    states = {}
    for unit in units:
        trials = by_unit.get(unit.key, [])
        complete = {t.user_attrs.get("epochs") for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        real = [t for t in trials if is_real_failure(t)]
        # one trial per attempt serves the first epoch count: its failures count the attempts
        attempts = [
            t
            for t in trials
            if t.state == optuna.trial.TrialState.FAIL and retried(t) and t.user_attrs.get("epochs") == unit.serves[0]
        ]
        if set(unit.serves) <= complete:
            states[unit.key] = ("done", None)
        elif any(t.state == optuna.trial.TrialState.RUNNING for t in trials):
            states[unit.key] = ("running", None)
        elif real:
            states[unit.key] = ("failed", fail_reason(real[-1]))
        elif given_up(attempts):
            states[unit.key] = ("failed", given_up(attempts))
        else:
            states[unit.key] = ("todo", None)
    return states


def _pick(study, units: list[Unit]) -> Claim | None:
    """The next unit to train and its trials (one per epoch count it serves); call it under claim_lock."""
    states = _unit_states(study, units)
    for unit in units:
        if states[unit.key][0] == "todo":
            trials = []
            for epochs in unit.serves:
                trial = study.ask()
                for key, value in (
                    ("unit", unit.key),
                    ("run", unit.dirname),
                    ("cell", cell_name(unit.cell(epochs))),
                    ("seed", unit.seed),
                    ("fold", unit.fold),
                    ("epochs", epochs),
                ):
                    trial.set_user_attr(key, value)
                mark_worker(trial)
                trials.append(trial)
            return Claim(trials, f"trial {unit.key}", unit)
    return None


def _claim(study, units: list[Unit], out: str) -> Claim | None:
    """Under the lock: mark the trials of dead workers failed, then take the next unit to train."""
    return claim(out, study, lambda: _pick(study, units))


def _train_unit(
    out: str,
    base: Config,
    unit: Unit,
    threads: int,
    progress: bool,
    tracking_parent: str | None = None,
    device: str | None = None,
) -> list[dict]:
    folded = {} if unit.fold is None else {"fold": unit.fold, "fold_seed": base.seed}  # the sweep's seed: same folds
    cfg = base.replace(
        **dict(unit.values),
        **folded,
        seed=unit.seed,
        progress=progress,
        **({"threads": threads} if threads else {}),
        **({"device": device} if device else {}),
    )
    root = os.path.join(out, "runs")
    run_dir = os.path.join(root, unit.dirname)  # one plain name: never outside SWEEP_DIR/runs
    if os.path.dirname(os.path.normpath(run_dir)) != os.path.normpath(root):
        raise CnnlabError(f"{run_dir}: not a run directory inside {root}; the grid's values make no safe name")
    if not os.path.exists(f"{run_dir}.json"):
        runs.write_json(
            f"{run_dir}.json",
            {
                "values": dict(unit.values),
                "seed": unit.seed,
                "serves": list(unit.serves),
                **({} if unit.fold is None else {"fold": unit.fold}),
            },
        )
    if os.path.isdir(run_dir) and runs.is_complete(run_dir):
        pass
    elif os.path.exists(os.path.join(run_dir, runs.CHECKPOINT)):
        resume_run(run_dir, device=device)  # a killed worker's training goes on from its last checkpoint, here
    else:
        if os.path.isdir(run_dir):
            import shutil

            shutil.rmtree(run_dir)  # died before its first checkpoint: start again
        train_run(cfg, run_dir, test_at_epochs=unit.serves, tracking_parent=tracking_parent)
    history = runs.load_run(run_dir)["history"]
    for epochs in unit.serves:  # the study's file names, one pair per cell this training serves
        if not os.path.exists(os.path.join(run_dir, f"batch_{cfg.batch_size}_epoch_{epochs}_acc_plot.jpg")):
            plot_curves(history[:epochs], run_dir, prefix=f"batch_{cfg.batch_size}_epoch_{epochs}_")
    return history


def work(
    out: str,
    threads: int = 0,
    progress: bool = True,
    on_result=None,
    storage: str | None = None,
    study_name: str = "cnnlab",
    device: str | None = None,
) -> int:
    """Train units until none is left, on `device` (None: the config's); returns how many this worker trained."""
    select_cuda_device(device)  # a worker on cuda:N makes its CUDA state on GPU N, not also on GPU 0
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    study = open_study(out, storage, study_name)  # once: each open replays a journal or makes a pool
    base, grid, seeds = load_spec(out, storage, study_name, study)
    metric = load_select_metric(out, storage, study_name, study)
    units, _ = plan(base, grid, seeds)
    parent = tracking.parent_of(out)  # the sweep's MLflow run: each training's is its child

    def finish(claimed: Claim, history: list[dict]) -> None:
        by_epoch = {r["epoch"]: r for r in history}
        for trial, epochs in zip(claimed.trials, claimed.job.serves):
            record = by_epoch[epochs]
            trial.set_user_attr("test_accuracy", record.get("test_accuracy"))
            trial.set_user_attr("train_time_s", sum(by_epoch[e]["time_s"] for e in range(1, epochs + 1)))
            tell_selected(study, trial, record, metric)
        if on_result:
            on_result()

    try:
        return work_loop(
            out,
            study,
            lambda: _pick(study, units),
            lambda claimed: _train_unit(out, base, claimed.job, threads, progress, parent, device),
            finish,
        )
    except Interrupted as exc:  # its trials are retried (from their checkpoints) on resume
        raise Interrupted(
            f"{str(exc).split('; resume with')[0]}; rerun the same cnnlab sweep command to resume"
        ) from None


# --- results ----------------------------------------------------------------------------------------

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
    states = _unit_states(study, units)
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
    from .plots import plot_heatmap

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


DEVICE = re.compile(r"(cpu|cuda)(:\d+)?")


def worker_devices(workers: int, devices: str | None, cuda_count: int, base_device: str = "auto") -> list[str | None]:
    """The device of each of `workers` workers on this machine: the `devices` list (--devices 0,1 = cuda:0,
    cuda:1; cpu, cuda:N, cpu:N) taken in turn, worker i on devices[i % len]; without it, worker i on cuda:i
    when the machine has a GPU for each worker (and the config says auto or cuda); else None: the config's
    device, shared."""
    if devices:
        names = [f"cuda:{d}" if d.isdigit() else d for d in (part.strip() for part in devices.split(","))]
        for name in names:
            if not DEVICE.fullmatch(name):
                raise ConfigError(f"--devices: {name!r} is not a device; give GPU numbers (0,1,...) or cpu, cuda:N")
        return [names[i % len(names)] for i in range(workers)]
    if workers > 1 and cuda_count >= workers and base_device in ("auto", "cuda"):
        return [f"cuda:{i}" for i in range(workers)]
    return [None] * workers


def work_together(
    out: str,
    workers: int,
    devices: list[str | None],
    threads: int,
    progress: bool = True,
    on_result=None,
    storage: str | None = None,
    study_name: str = "cnnlab",
) -> None:
    """`workers` workers on this machine: this process and workers - 1 helper processes (`cnnlab sweep
    --worker`), worker i on devices[i]."""
    import subprocess

    # the storage URL may hold a password: it goes to the helpers in their environment, never on a
    # command line (which every user of the machine can read)
    env = {**os.environ, STORAGE_ENV: storage} if storage else {k: v for k, v in os.environ.items() if k != STORAGE_ENV}
    helpers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cnnlab.cli",
                "sweep",
                "--out",
                out,
                "--worker",
                "--threads",
                str(threads),
                "--study",
                study_name,
                *(["--device", device] if device else []),
            ],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        for device in devices[1:]
    ]
    try:
        work(
            out,
            threads,
            progress and workers == 1,
            on_result=on_result,
            storage=storage,
            study_name=study_name,
            device=devices[0],
        )
    finally:
        for helper in helpers:
            helper.wait()


def worker_threads(threads: int, workers: int) -> int:
    """Threads per worker: --threads, else each worker its share of the cores (0 = all, one worker).
    The thread count changes float sums slightly: for the same numbers whatever the number of workers,
    give --threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return threads or (max(1, cores // workers) if workers > 1 else 0)


@dataclass(frozen=True)
class Workers:
    """Who works through a sweep: `count` processes on this machine, placed on `devices` as worker_devices
    reads them, sharing the Optuna study `study_name` kept in `storage` (a database URL; None: the sweep
    folder's journal file)."""

    count: int = 1
    devices: str | None = None
    storage: str | None = None
    study_name: str = "cnnlab"


def run_sweep(
    out: str,
    base: Config,
    grid: dict[str, list],
    seeds: int,
    workers: Workers = Workers(),
    progress: bool = True,
    select_metric: str | None = None,
) -> dict:
    """Create (or resume) the sweep in `out` and work through it with `workers`, worker i on the device
    worker_devices gives it (recorded in each of its runs' config); cells are compared on `select_metric`
    (None: as selection() chooses)."""
    import torch

    storage, study_name = workers.storage, workers.study_name
    placed = worker_devices(workers.count, workers.devices, torch.cuda.device_count(), base.device)
    create_sweep(out, base, grid, seeds, storage, study_name, select_metric or selection(base, None)[0])
    parent = tracking.open_parent(base, out)
    study = open_study(out, storage, study_name)  # for the tables: opened once, it reads only new trials after
    show = (lambda: print(format_table(results(out, storage, study_name, study)), flush=True)) if progress else None
    threads = worker_threads(base.threads, workers.count)
    try:
        work_together(out, workers.count, placed, threads, progress, show, storage, study_name)
    except BaseException as exc:
        tracking.close_parent(base, parent, "KILLED" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "FAILED")
        raise
    res = results(out, storage, study_name, study)
    save_results(out, res)
    tracking.close_parent(base, parent)
    return res


__all__ = [
    "NAMED_GRIDS",
    "Unit",
    "Workers",
    "cells_of",
    "check_data",
    "create_sweep",
    "describe_plan",
    "format_table",
    "load_select_metric",
    "parse_grid",
    "plan",
    "results",
    "run_sweep",
    "save_results",
    "selection",
    "work",
    "work_together",
    "worker_devices",
]
