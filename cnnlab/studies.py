"""The Optuna mechanics that grid sweeps and TPE searches share: the sweep directory, the study's
storage (a journal file in the directory, or a database), claims, worker liveness and heartbeats,
the trial loop (work_loop) and how finished trials are told. Only Optuna's public API is used.

A trial that ends FAIL carries a `fail_reason` user attribute (fail_reason reads it; a claimed trial
that Optuna's stale-heartbeat check failed has none, and its worker died). INTERRUPTED (Ctrl-C, SIGTERM) is
retried on resume; DIED (the worker was killed or vanished), and a failure without a reason, are
retried up to MAX_ATTEMPTS times in all; every other failure is the trial's own and final.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import socket
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from . import runs
from .adaptation import IMBALANCE_RATIO, adapt_to_dataset, adapt_to_imbalance, imbalance_ratio
from .config import DATA_KEYS, Config
from .errors import CnnlabError, ConfigError, Interrupted, first_line
from .tracking import passwords, redact

JOURNAL, LOCK = "optuna.journal", ".claim.lock"
STORAGE_ENV = "CNNLAB_STORAGE"  # the --storage URL, when it is not on the command line
DIED, INTERRUPTED = "worker died", "interrupted"
MAX_ATTEMPTS = 3  # a unit whose worker dies (or that fails without a reason) this often is given up
HEARTBEAT_S, GRACE_S = 10, 60  # a trial whose worker has not been heard of for GRACE_S is taken as dead


def where(out: str, storage: str | None) -> str:
    """How to name a study in a message: its redacted storage URL, or the sweep directory."""
    return redact(storage, storage) if storage else out


def has_password(url: str | None) -> bool:
    return bool(passwords(url))


def prepare_dir(out: str, spec_file: str, spec: dict, what: str) -> None:
    """A sweep or search directory: new (or empty), or holding the same spec (a resume)."""
    path = os.path.join(out, spec_file)
    if os.path.exists(path):
        if runs.read_json(path) != spec:
            raise CnnlabError(f"{out}: holds a different {what}; choose another --out (or rerun the same command)")
    elif os.path.isdir(out) and os.listdir(out):
        raise CnnlabError(f"{out}: already holds files that are not a cnnlab {what}; choose another --out")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)


def open_study(out: str, storage: str | None = None, study_name: str = "cnnlab", sampler=None, pruner=None):
    """The sweep's Optuna study: in SWEEP_DIR/optuna.journal, or in the database at `storage`
    (e.g. postgresql://user:password@host/db), whose heartbeats let other machines see a dead worker.
    The URL is never shown with its password (tracking.redact)."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if storage:
        try:
            backend = RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except Exception as exc:  # sqlalchemy/driver errors: name the URL, not the stack
            raise CnnlabError(
                f"--storage {redact(storage, storage)}: cannot open the database "
                f"({redact(first_line(exc, 200), storage)})"
            ) from None
    else:
        backend = JournalStorage(JournalFileBackend(os.path.join(out, JOURNAL)))
    study = optuna.create_study(
        study_name=study_name,
        storage=backend,
        direction="maximize",
        load_if_exists=True,
        sampler=sampler,
        pruner=pruner,
    )
    _STORAGES[study] = backend
    return study


_STORAGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # study -> the storage open_study gave it


def storage_of(study):
    """The storage object open_study opened `study` on (Optuna keeps its own copy private)."""
    try:
        return _STORAGES[study]
    except KeyError:
        raise CnnlabError("a cnnlab study must be opened with cnnlab.studies.open_study") from None


def _has_heartbeat(storage) -> bool:
    """Whether the storage keeps Optuna's heartbeats (a database opened with heartbeat_interval)."""
    get_interval = getattr(storage, "get_heartbeat_interval", None)
    return callable(get_interval) and get_interval() is not None


def trial_id(study, number: int) -> int:
    """The storage's id of trial `number` of `study`, by the storage's public lookups."""
    storage = storage_of(study)
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


@contextlib.contextmanager
def claim_lock(out: str, study) -> Iterator[None]:
    """Only one worker claims at a time: a PostgreSQL advisory lock for a database shared by several
    machines, a file lock in SWEEP_DIR otherwise."""
    engine = getattr(storage_of(study), "engine", None)  # RDBStorage's SQLAlchemy engine
    if engine is not None and engine.dialect.name == "postgresql":
        import sqlalchemy

        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(2718281828)"))
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(2718281828)"))
        return
    with open(os.path.join(out, LOCK), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


WORKER_ID = uuid.uuid4().hex  # this process, as a worker: random, not host+pid (hosts and pids repeat)


def _machine() -> str:
    """This machine (and boot): its host name, and Linux's boot id where there is one."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()} {boot}".strip()


def mark_worker(trial) -> None:
    """Record which worker runs the trial (so that others can tell whether it is still alive): its
    random id, and its machine and pid for the workers of the same machine to check."""
    for key, value in (("worker", WORKER_ID), ("machine", _machine()), ("pid", os.getpid())):
        trial.set_user_attr(key, value)


def _alive(trial, storage) -> bool:
    """Whether the worker of a RUNNING trial is still there: by its pid when it ran on this machine;
    else, in a database, by Optuna's heartbeat, which the database's clock times (fail_dead_trials
    asks it); else (a journal file) by the age of its last heartbeat by this machine's clock."""
    if trial.user_attrs.get("machine") == _machine():
        try:
            os.kill(int(trial.user_attrs["pid"]), 0)
        except (ProcessLookupError, ValueError, KeyError):
            return False
        except PermissionError:
            pass
        return True
    if _has_heartbeat(storage):
        return True
    return time.time() - trial.user_attrs.get("heartbeat", 0.0) < GRACE_S


class Heartbeat:
    """Marks the claimed trials alive every HEARTBEAT_S while their training runs: Optuna's own
    heartbeat in a database (stamped with the database's clock, so the workers' clocks may differ),
    a timestamp attribute in a journal file (one machine)."""

    def __init__(self, study, trials: list):
        self.study, self.trials = study, trials
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def beat(self) -> None:
        storage = storage_of(self.study)
        for trial in self.trials:
            if _has_heartbeat(storage):
                storage.record_heartbeat(trial_id(self.study, trial.number))
            else:
                trial.set_user_attr("heartbeat", time.time())

    def _run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is retried at the next one
                self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


def per_trial_sampler(seed: int, make):
    """An Optuna sampler that proposes each trial with a fresh `make(trial_seed)` sampler, seeded from
    (seed, trial number): trial numbers are unique in a study, so parallel workers and resumed
    searches never replay one generator's draws (one sampler seeded once per process did), and the
    same search from scratch proposes the same."""
    import numpy as np
    import optuna

    class PerTrial(optuna.samplers.BaseSampler):
        def __init__(self):
            self.number, self.sampler = None, None

        def of(self, trial):
            if trial.number != self.number:
                self.number = trial.number
                self.sampler = make(int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0]))
            return self.sampler

        def infer_relative_search_space(self, study, trial):
            return self.of(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.of(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.of(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            self.of(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self.of(trial).after_trial(study, trial, state, values)

    return PerTrial()


SELECT_METRICS = ("val_accuracy", "val_balanced_accuracy", "val_macro_f1")  # history keys a study may select on


def refuse_data_keys(keys: Iterable[str], option: str, study: str) -> None:
    """Refuse, in one line, a grid or search space (`option`: --grid or --param) over a key that changes
    which images are trained and validated on (config.DATA_KEYS): its cells (trials) would each be scored
    on other validation images, and their ranking would compare the images as much as the recipes."""
    for key in keys:
        if key in ("folds", "fold", "fold_seed"):
            continue  # k-fold cross-validation has its own flag (--folds K), and its own message
        if key in DATA_KEYS:
            raise ConfigError(
                f"{option} {key}: config key {key!r} changes which images are trained and validated on, so each "
                f"value would be scored on other validation images and the {study}'s ranking would compare "
                f"those as much as the recipes; give --{key.replace('_', '-')} once and run a separate "
                f"{study} per value"
            )


def require_validation(configs: dict[str, Config]) -> None:
    """Sweeps and searches choose on a validation metric, never on the test split: refuse up front any
    config (named by the key of `configs`) that has no validation split (val_fraction 0 without folds)."""
    for name, cfg in configs.items():
        if not cfg.folds and not cfg.val_fraction > 0:
            raise ConfigError(
                f"config key 'val_fraction' is {cfg.val_fraction}{name}: a sweep or search chooses "
                "on validation, never on the test split, and needs a validation split; set val_fraction "
                "above 0 (e.g. 0.1) or use --folds K"
            )


def training_counts_of(cfg: Config) -> tuple[list[str], Any] | None:
    """The classes and training image counts of the config's dataset, or None when it cannot be scanned
    yet (no path, not there: the trainings report that themselves)."""
    from .data.dataset import training_counts
    from .errors import DataError

    try:
        return training_counts(cfg.data_path())
    except (DataError, ConfigError, OSError):
        return None


def require_splits(configs: dict[str, Config], counts: tuple[list[str], Any] | None) -> None:
    """Refuse up front, in one line, configs whose validation split cannot be made from the training
    images `counts` (classes, images of each): a class with fewer images than folds, or one that
    val_fraction gives no validation image (a study would then have nothing but the test split)."""
    if counts is None:
        return
    classes, sizes = counts
    for name, cfg in configs.items():
        for cls, size in zip(classes, sizes):
            if cfg.folds and size < cfg.folds:
                raise ConfigError(
                    f"--folds {cfg.folds}{name}: class {cls!r} has {size} training image(s), fewer "
                    "than the folds; use fewer folds or add images"
                )
            if not cfg.folds and int(cfg.val_fraction * size) == 0:
                raise ConfigError(
                    f"config key 'val_fraction' is {cfg.val_fraction}{name}: class {cls!r} has "
                    f"{size} training image(s) and gets no validation image; a sweep or search "
                    "never chooses on the test split: raise val_fraction or use --folds K"
                )


def choose_select_metric(given: str | None, counts: tuple[list[str], Any] | None) -> tuple[str, str]:
    """The metric a study selects on and a line saying why: `given` (--select-metric), else balanced
    accuracy when the training classes are imbalanced (largest / smallest count above IMBALANCE_RATIO),
    else accuracy."""
    if given:
        if given not in SELECT_METRICS:
            raise ConfigError(f"--select-metric {given!r}: choose one of {', '.join(SELECT_METRICS)}")
        return given, f"selecting on {given} (--select-metric)"
    if counts is not None and len(counts[1]):
        ratio = imbalance_ratio(counts[1])
        if ratio > IMBALANCE_RATIO:
            return "val_balanced_accuracy", (
                f"selecting on val_balanced_accuracy: the training classes are "
                f"imbalanced (largest/smallest {ratio:.1f} > {IMBALANCE_RATIO:g}); "
                "--select-metric to choose"
            )
    return "val_accuracy", "selecting on val_accuracy (--select-metric to choose)"


def selection(cfg: Config, given: str | None) -> tuple[str, str]:
    """The metric a sweep or search on `cfg`'s data selects on, and the line that says why."""
    return choose_select_metric(given, None if given else training_counts_of(cfg))


def adapt_study(cfg: Config, keep: set[str], cells: list[dict]) -> tuple[Config, list[str]]:
    """The base config of a sweep or search adapted as `cnnlab train` adapts a run (adapt_to_dataset,
    adapt_to_imbalance) to the training split of its dataset, and the lines saying so (printed once).
    `keep`: the keys given and those swept or searched, never changed. `cells`: the grid's cells, refused
    where a cell's own adaptation differs from the base's (it depends on a swept key: `cnnlab train` with
    that cell's values would train another recipe). Unchanged without a dataset to scan yet."""
    from .data.dataset import Splitting, training_split_counts

    found = training_counts_of(cfg)
    if found is None:
        return cfg, []
    counts = training_split_counts(found[1], Splitting.of(cfg))

    def adapted(start: Config) -> tuple[Config, list[str]]:
        sized, notes = adapt_to_dataset(start, int(counts.sum()), keep)
        balanced, more = adapt_to_imbalance(sized, counts, keep)
        return balanced, notes + more

    base, notes = adapted(cfg)
    for cell in cells:
        own, shared = adapted(cfg.replace(**cell))[0], base.replace(**cell)
        differ = [f.name for f in dataclasses.fields(Config) if getattr(own, f.name) != getattr(shared, f.name)]
        if differ:
            raise ConfigError(
                f"grid cell {','.join(f'{k}={v}' for k, v in cell.items())}: on this training split of "
                f"{int(counts.sum())} images, cnnlab train would adapt {', '.join(differ)} to it differently "
                f"than to the other cells; give --{' --'.join(k.replace('_', '-') for k in differ)} to fix "
                "them for every cell, or --no-adapt"
            )
    return base, notes


def retried(trial) -> bool:
    """A failed trial whose unit is tried again: its worker was interrupted or died, or it gave no reason."""
    return fail_reason(trial) in (None, DIED, INTERRUPTED)


def is_real_failure(trial) -> bool:
    """A failed trial that failed for a reason of its own (not its worker's)."""
    import optuna

    return trial.state == optuna.trial.TrialState.FAIL and not retried(trial)


def given_up(failed: list) -> str | None:
    """Why a unit is not tried again after these retried failures (one per attempt), or None: after
    MAX_ATTEMPTS deaths or failures without a reason (interruptions do not count)."""
    counted = [fail_reason(t) or "failed without a reason" for t in failed if fail_reason(t) != INTERRUPTED]
    if len(counted) < MAX_ATTEMPTS:
        return None
    return f"{counted[-1]} {len(counted)} times; not retried (rerun with a new --out to try again)"


def fail_dead_trials(study) -> None:
    """Mark RUNNING trials whose worker is gone as failed, so that they are retried: in a database,
    those without a heartbeat for GRACE_S by the database's clock (Optuna's fail_stale_trials; they end
    without a reason, which fail_reason reads as DIED); then those of this machine by pid, and in a
    journal file by their heartbeat attribute (with the reason DIED). Call it under claim_lock."""
    import optuna

    storage = storage_of(study)
    if _has_heartbeat(storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not _alive(trial, storage):
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, ValueError):  # finished meanwhile
                storage.set_trial_user_attr(trial_id(study, trial.number), "fail_reason", DIED)
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def fail_reason(trial) -> str | None:
    """Why a FAIL trial failed: its `fail_reason`; a claimed trial failed without one was failed by
    Optuna's stale-heartbeat check, so its worker died; None for a trial nobody claimed."""
    return trial.user_attrs.get("fail_reason") or (DIED if "worker" in trial.user_attrs else None)


@dataclass
class Claim:
    """What a worker took under the claim lock: the trials its training ends (one per result it
    tells), `label` naming it in messages, and `job`, what to train."""

    trials: list
    label: str
    job: Any = None


def claim(out: str, study, pick: Callable[[], Claim | None]) -> Claim | None:
    """Under the lock: fail the trials of dead workers, then `pick` the next job (None: nothing left)."""
    with claim_lock(out, study):
        fail_dead_trials(study)
        return pick()


def work_loop(
    out: str,
    study,
    pick: Callable[[], Claim | None],
    train: Callable[[Claim], Any],
    finish: Callable[[Claim, Any], None],
) -> int:
    """The trial loop of sweeps and searches: claim a job (`pick`, under the lock), `train` it while its
    trials' heartbeat runs, and `finish` its trials with the result. A failure of the job's own ends
    its trials FAIL with the reason (printed; the loop goes on); optuna.TrialPruned ends them PRUNED;
    Ctrl-C / SIGTERM ends them INTERRUPTED (retried on resume) and is raised again. Returns how many
    jobs this worker finished."""
    import optuna

    done = 0
    while (claimed := claim(out, study, pick)) is not None:
        try:
            with Heartbeat(study, claimed.trials):
                result = train(claimed)
        except (Interrupted, KeyboardInterrupt):
            for trial in claimed.trials:
                tell_failure(study, trial, INTERRUPTED)
            raise
        except optuna.TrialPruned as exc:
            for trial in claimed.trials:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            print(f"{claimed.label}: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # the job's own failure (bad value, non-finite loss, out of memory): final
            reason = str(exc) if isinstance(exc, CnnlabError) else f"{type(exc).__name__}: {first_line(exc, 300)}"
            for trial in claimed.trials:
                tell_failure(study, trial, reason)
            print(f"{claimed.label} failed: {reason}", file=sys.stderr)
            continue
        finish(claimed, result)
        done += 1
    return done


def tell_failure(study, trial, reason: str) -> None:
    """End a trial as FAIL with its reason (INTERRUPTED, DIED: to be retried)."""
    import optuna

    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def tell_result(study, trial, value: float | None, metric: str = "val_accuracy") -> None:
    """End a trial with the value of the metric it is selected on; without one it fails, saying so
    (Optuna would fail it with no reason)."""
    if value is None or not math.isfinite(value):
        what = "validation accuracy" if metric == "val_accuracy" else metric
        tell_failure(study, trial, f"no {what} ({value}); is there a validation split?")
    else:
        study.tell(trial, value)


def tell_selected(study, trial, record: dict, metric: str) -> None:
    """End a trial with `metric` of its history `record`; a history without that key at all (a metric
    this version does not record) fails it, naming the keys it has."""
    if metric not in record:
        known = [k for k in SELECT_METRICS if k in record]
        tell_failure(
            study,
            trial,
            f"--select-metric {metric}: the run's history records no {metric}; choose "
            f"{' or '.join(known) or 'another metric'}",
        )
    else:
        tell_result(study, trial, record[metric], metric)


__all__ = [
    "DIED",
    "IMBALANCE_RATIO",
    "INTERRUPTED",
    "MAX_ATTEMPTS",
    "SELECT_METRICS",
    "STORAGE_ENV",
    "Claim",
    "Heartbeat",
    "claim",
    "claim_lock",
    "fail_dead_trials",
    "fail_reason",
    "given_up",
    "has_password",
    "is_real_failure",
    "mark_worker",
    "open_study",
    "per_trial_sampler",
    "prepare_dir",
    "choose_select_metric",
    "require_splits",
    "require_validation",
    "retried",
    "selection",
    "tell_selected",
    "training_counts_of",
    "storage_of",
    "tell_failure",
    "tell_result",
    "trial_id",
    "where",
    "work_loop",
]
