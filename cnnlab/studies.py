"""The Optuna mechanics that grid sweeps and TPE searches share: the sweep directory, the study's
storage (a journal file in the directory, or a database), claims, worker liveness and heartbeats,
and how finished trials are told.

A trial that ends FAIL carries a `fail_reason` user attribute. INTERRUPTED (Ctrl-C, SIGTERM) is
retried on resume; DIED (the worker was killed or vanished), and a failure without a reason, are
retried up to MAX_ATTEMPTS times in all; every other failure is the trial's own and final.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
import threading
import time
import uuid
import warnings
from typing import Iterator

from . import runs
from .tracking import passwords, redact
from .config import Config
from .errors import CnnlabError, ConfigError, first_line

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
            raise CnnlabError(f"--storage {redact(storage, storage)}: cannot open the database "
                              f"({redact(first_line(exc, 200), storage)})") from None
    else:
        backend = JournalStorage(JournalFileBackend(os.path.join(out, JOURNAL)))
    return optuna.create_study(study_name=study_name, storage=backend, direction="maximize", load_if_exists=True,
                               sampler=sampler, pruner=pruner)


@contextlib.contextmanager
def claim_lock(out: str, study) -> Iterator[None]:
    """Only one worker claims at a time: a PostgreSQL advisory lock for a database shared by several
    machines, a file lock in SWEEP_DIR otherwise."""
    engine = getattr(study._storage, "engine", None)
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


def _has_heartbeat(storage) -> bool:
    from optuna.storages._heartbeat import BaseHeartbeat

    return isinstance(storage, BaseHeartbeat)


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
        storage = self.study._storage
        for trial in self.trials:
            if _has_heartbeat(storage):
                storage.record_heartbeat(trial._trial_id)
            else:
                trial.set_user_attr("heartbeat", time.time())

    def _run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a missed beat is retried at the next one
                self.beat()

    def __enter__(self) -> "Heartbeat":
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


def require_validation(configs: dict[str, Config]) -> None:
    """Sweeps and searches choose on validation accuracy: refuse up front any config (named by the
    key of `configs`) that has no validation split."""
    for name, cfg in configs.items():
        if not cfg.val_fraction > 0:
            raise ConfigError(f"config key 'val_fraction' is {cfg.val_fraction}{name}: a sweep or search chooses "
                              "on validation accuracy and needs a validation split; set val_fraction above 0 (e.g. 0.1)")


def retried(trial) -> bool:
    """A failed trial whose unit is tried again: its worker was interrupted or died, or it gave no reason."""
    return trial.user_attrs.get("fail_reason") in (None, DIED, INTERRUPTED)


def is_real_failure(trial) -> bool:
    """A failed trial that failed for a reason of its own (not its worker's)."""
    import optuna

    return trial.state == optuna.trial.TrialState.FAIL and not retried(trial)


def given_up(failed: list) -> str | None:
    """Why a unit is not tried again after these retried failures (one per attempt), or None: after
    MAX_ATTEMPTS deaths or failures without a reason (interruptions do not count)."""
    counted = [t.user_attrs.get("fail_reason") or "failed without a reason" for t in failed
               if t.user_attrs.get("fail_reason") != INTERRUPTED]
    if len(counted) < MAX_ATTEMPTS:
        return None
    return f"{counted[-1]} {len(counted)} times; not retried (rerun with a new --out to try again)"


def fail_dead_trials(study) -> None:
    """Mark RUNNING trials whose worker is gone as failed (DIED), so that they are retried: those of
    this machine by pid, others by their heartbeat (in a database: no beat for GRACE_S by the
    database's clock). Call it under claim_lock."""
    import optuna

    storage = study._storage
    # Optuna's own stale-trial check compares heartbeats with the database's now()
    stale = set(storage._get_stale_trial_ids(study._study_id)) if _has_heartbeat(storage) else set()
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.RUNNING and (trial._trial_id in stale or not _alive(trial, storage)):
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", DIED)
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # it finished meanwhile
                storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def tell_failure(study, trial, reason: str) -> None:
    """End a trial as FAIL with its reason (INTERRUPTED, DIED: to be retried)."""
    import optuna

    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def tell_result(study, trial, val_accuracy: float | None) -> None:
    """End a trial with its validation accuracy; without one it fails, saying so (Optuna would fail it
    with no reason)."""
    if val_accuracy is None or not math.isfinite(val_accuracy):
        tell_failure(study, trial, f"no validation accuracy ({val_accuracy}); is there a validation split?")
    else:
        study.tell(trial, val_accuracy)


__all__ = ["DIED", "INTERRUPTED", "MAX_ATTEMPTS", "STORAGE_ENV", "Heartbeat", "claim_lock", "fail_dead_trials",
           "given_up", "has_password", "is_real_failure", "mark_worker", "open_study", "per_trial_sampler", "prepare_dir",
           "require_validation", "retried", "tell_failure", "tell_result", "where"]
