"""What a sweep is and where it stands: its spec (config, grid, seeds, metric) in SWEEP_DIR/sweep.json and in
its Optuna study, and the state of each of its units read from the study's trials.
"""

from __future__ import annotations

import os

from .. import runs
from ..config import Config, saved_config
from ..errors import CnnlabError
from ..studies import (
    choose_select_metric,
    fail_reason,
    given_up,
    is_real_failure,
    open_study,
    prepare_dir,
    refuse_data_keys,
    retried,
    where,
)
from .planning import Unit, check_data, plan

SPEC = "sweep.json"


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


def unit_states(study, units: list[Unit]) -> dict[str, tuple[str, str | None]]:
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
