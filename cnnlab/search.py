"""Beyond grids: `cnnlab sweep --search tpe --trials N --param KEY=SPACE ...`.

Optuna's TPE sampler proposes configurations; each trial trains one run and reports its validation
metric (--select-metric: accuracy, balanced accuracy or macro-F1; never a test figure) after every
epoch, and Optuna's median pruner stops trials that fall behind the median of earlier trials at the
same epoch. Trials live in the same kind of study as grid sweeps (journal file
or --storage URL), so an interrupted search resumes, and several workers can search together.
"""

from __future__ import annotations

import os
import typing
from typing import Any

from . import runs, tracking
from .config import Config
from .errors import ConfigError, Interrupted
from .pipeline import train_run
from .stats import summarize
from .studies import (
    Claim,
    choose_select_metric,
    fail_reason,
    is_real_failure,
    mark_worker,
    open_study,
    per_trial_sampler,
    prepare_dir,
    refuse_data_keys,
    require_splits,
    require_validation,
    tell_selected,
    training_counts_of,
    work_loop,
)
from .training import Callback

SEARCH_SPEC, RESULTS = "search.json", "results.json"


def run_name(number: int) -> str:
    """The run directory of trial `number`, in SEARCH_DIR/runs/."""
    return f"trial-{number:04d}"


def parse_space(specs: list[str], base: Config) -> dict[str, dict]:
    """`key=a,b,c` (a choice) or `key=LOW..HIGH` / `key=LOW..HIGH:log` (a range, int or float by the key)."""
    hints = typing.get_type_hints(Config)
    space: dict[str, dict] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values or key not in hints:
            raise ConfigError(f"--param {spec!r}: expected KEY=A,B,C or KEY=LOW..HIGH[:log] with a config key")
        refuse_data_keys([key], "--param", "search")
        if ".." in values:
            bounds, _, scale = values.partition(":")
            low_text, _, high_text = bounds.partition("..")
            kind = hints[key]
            if kind not in (int, float):
                raise ConfigError(f"--param {key}: a range needs a numeric key, {key!r} is {kind}")
            low, high = (getattr(base.replace(**{key: v.strip()}), key) for v in (low_text, high_text))
            if not low < high:
                raise ConfigError(f"--param {key}: LOW must be below HIGH, got {low}..{high}")
            space[key] = {"kind": kind.__name__, "low": low, "high": high, "log": scale.strip() == "log"}
        else:
            space[key] = {
                "kind": "choice",
                "values": [getattr(base.replace(**{key: v.strip()}), key) for v in values.split(",")],
            }
    if not space:
        raise ConfigError("--search tpe needs at least one --param KEY=SPACE")
    if base.folds or {"folds", "fold", "fold_seed"} & set(space):
        raise ConfigError(
            "--folds: k-fold cross-validation is for grid sweeps; a TPE search trains one split per trial"
        )
    require_validation({"": base})
    return space


def suggest(trial, space: dict[str, dict]) -> dict[str, Any]:
    params = {}
    for key, dim in space.items():
        if dim["kind"] == "choice":
            params[key] = trial.suggest_categorical(key, dim["values"])
        elif dim["kind"] == "int":
            params[key] = trial.suggest_int(key, dim["low"], dim["high"], log=dim["log"])
        else:
            params[key] = trial.suggest_float(key, dim["low"], dim["high"], log=dim["log"])
    return params


class ReportAndPrune(Callback):
    """Reports the validation metric `metric` after each epoch; raises optuna.TrialPruned when the
    pruner says so."""

    def __init__(self, trial, metric: str = "val_accuracy"):
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, epoch: int, record: dict, model) -> None:
        import optuna

        if record.get(self.metric) is not None:
            self.trial.report(record[self.metric], epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")


def _open(out: str, base: Config, storage: str | None, study_name: str):
    import optuna

    # constant_liar: a worker's proposal takes the running trials of the others into account
    sampler = per_trial_sampler(base.seed, lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True))
    return open_study(
        out,
        storage,
        study_name,
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )


def _finished(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state in states or is_real_failure(t))


def run_search(
    out: str,
    base: Config,
    space: dict[str, dict],
    trials: int,
    storage: str | None = None,
    study_name: str = "cnnlab",
    progress: bool = True,
    select_metric: str = "val_accuracy",
) -> dict:
    """Run (or resume) a TPE search until `trials` trials have finished (completed, pruned or failed),
    each told its validation `select_metric`."""
    import optuna

    choose_select_metric(select_metric, None)  # a known metric
    refuse_data_keys(space, "--param", "search")
    require_splits({"": base}, training_counts_of(base))
    spec = runs.json_round_trip(
        {"mode": "tpe", "config": base.to_dict(), "space": space, "trials": trials, "select_metric": select_metric}
    )
    prepare_dir(out, SEARCH_SPEC, spec, "search")
    runs.write_json(os.path.join(out, SEARCH_SPEC), spec)
    study = _open(out, base, storage, study_name)
    parent = tracking.open_parent(base, out)  # the search's MLflow run: each trial's is its child

    def pick() -> Claim | None:
        runs.write_json(
            os.path.join(out, RESULTS), search_results(study, base.seed, select_metric)
        )  # for `cnnlab report`
        running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
        if _finished(study) + running >= trials:
            return None
        trial = study.ask()
        mark_worker(trial)
        params = suggest(trial, space)
        return Claim([trial], f"trial {trial.number} {params}", params)

    def train(claimed: Claim) -> dict:
        trial = claimed.trials[0]
        return train_run(
            base.replace(**claimed.job, progress=progress),
            os.path.join(out, "runs", run_name(trial.number)),
            callbacks=(ReportAndPrune(trial, select_metric),),
            tracking_parent=parent,
        )

    def finish(claimed: Claim, metrics: dict) -> None:
        trial = claimed.trials[0]
        history = runs.load_run(os.path.join(out, "runs", run_name(trial.number)))["history"]
        trial.set_user_attr("test_accuracy", (metrics.get("test") or {}).get("accuracy"))
        trial.set_user_attr("train_time_s", metrics["train_time_s"])
        trial.set_user_attr("val_accuracy", history[-1].get("val_accuracy"))
        tell_selected(study, trial, history[-1], select_metric)

    try:
        work_loop(out, study, pick, train, finish)
    except BaseException as exc:
        tracking.close_parent(base, parent, "KILLED" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "FAILED")
        raise
    res = search_results(study, base.seed, select_metric)
    runs.write_json(os.path.join(out, RESULTS), res)
    tracking.close_parent(base, parent)
    return res


def search_results(study, seed: int, select_metric: str = "val_accuracy") -> dict:
    """Every finished trial (all trained with the config's `seed`) and the best on the validation
    `select_metric` (each row's `val`; its `val_accuracy` beside it)."""
    import optuna

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL):
            rows.append(
                {
                    "trial": t.number,
                    "state": t.state.name,
                    "params": t.params,
                    "val": t.value,
                    "val_accuracy": t.user_attrs.get("val_accuracy", t.value),
                    "test_accuracy": t.user_attrs.get("test_accuracy"),
                    "train_time_s": t.user_attrs.get("train_time_s"),
                    "epochs": max(t.intermediate_values, default=None),  # the last reported (pruned: fewer)
                    "run": run_name(t.number),
                    "reason": fail_reason(t) if t.state == optuna.trial.TrialState.FAIL else None,
                }
            )
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(complete, key=lambda r: r["val"]) if complete else None
    return {
        "mode": "tpe",
        "seed": seed,
        "select_metric": select_metric,
        "rows": sorted(rows, key=lambda r: r["trial"]),
        "best": best,
        "val_summary": summarize([r["val"] for r in complete]),
    }


def format_search(res: dict) -> str:
    metric = res.get("select_metric", "val_accuracy")
    lines = [f"{'trial':>5}  {'state':<9}{metric + ' %':>{max(10, len(metric) + 2)}}  params"]
    for r in res["rows"]:
        value = r.get("val", r["val_accuracy"])
        val = "-" if value is None else f"{100 * value:.2f}"
        val = f"{val:>{max(10, len(metric) + 2)}}"
        lines.append(
            f"{r['trial']:>5}  {r['state']:<9}{val}  {r['params']}" + (f"  ({r['reason']})" if r["reason"] else "")
        )
    best = res["best"]
    if best:
        test = best["test_accuracy"]
        lines.append(
            f"best on validation: trial {best['trial']} {best['params']} (by {metric}): "
            f"{100 * best.get('val', best['val_accuracy']):.2f}%; "
            f"its test accuracy: {'-' if test is None else f'{100 * test:.2f}%'} (one seed per trial: seed {res.get('seed')})"
        )
    return "\n".join(lines)
