"""The Optuna mechanics that grid sweeps and TPE searches share: the sweep directory, the study's
storage (a journal file in the directory, or a database), claims, worker liveness and heartbeats,
and how finished trials are told.

A trial that ends FAIL carries a `fail_reason` user attribute; DIED marks a trial whose worker went
away (killed, Ctrl-C): such trials are retried, every other failure is the trial's own.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
import warnings
from typing import Iterator

from . import runs
from .errors import CnnlabError, first_line

JOURNAL, LOCK = "optuna.journal", ".claim.lock"
DIED = "worker died"
HEARTBEAT_S, GRACE_S = 10, 60  # a trial whose worker has not been heard of for GRACE_S is taken as dead


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
    (e.g. postgresql://user:password@host/db), whose heartbeats let other machines see a dead worker."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
    if storage:
        try:
            backend = RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except Exception as exc:  # sqlalchemy/driver errors: name the URL, not the stack
            raise CnnlabError(f"--storage {storage}: cannot open the database ({first_line(exc, 200)})") from None
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


def mark_worker(trial) -> None:
    """Record which worker runs the trial (so that others can tell whether it is still alive)."""
    trial.set_user_attr("worker", f"{socket.gethostname()}@{os.getpid()}")


def _alive(trial) -> bool:
    """Whether the worker of a RUNNING trial is still there: by its pid on this machine, else by the
    age of its last heartbeat."""
    host, _, pid = trial.user_attrs.get("worker", "").rpartition("@")
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            pass
        return True
    return time.time() - trial.user_attrs.get("heartbeat", 0.0) < GRACE_S


class Heartbeat:
    """Marks the claimed trials alive every HEARTBEAT_S while their training runs (Optuna's own
    heartbeat where the storage has one, and a timestamp attribute everywhere)."""

    def __init__(self, study, trials: list):
        self.study, self.trials = study, trials
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def beat(self) -> None:
        from optuna.storages._heartbeat import BaseHeartbeat

        storage = self.study._storage
        for trial in self.trials:
            if isinstance(storage, BaseHeartbeat):
                storage.record_heartbeat(trial._trial_id)
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


def is_real_failure(trial) -> bool:
    """A failed trial that is not a dead worker's (those are retried)."""
    import optuna

    return trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs.get("fail_reason", DIED) != DIED


def fail_dead_trials(study) -> None:
    """Mark RUNNING trials whose worker is gone as failed ("worker died"), so that they are retried:
    by Optuna's heartbeat where the storage keeps one, by pid or heartbeat age everywhere. Call it
    under claim_lock."""
    import optuna
    from optuna.storages._heartbeat import BaseHeartbeat

    if isinstance(study._storage, BaseHeartbeat):
        optuna.storages.fail_stale_trials(study)  # workers on other machines that stopped beating
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.RUNNING and not _alive(trial):
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", DIED)
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)


def tell_failure(study, trial, reason: str) -> None:
    """End a trial as FAIL with its reason (DIED: to be retried)."""
    import optuna

    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


__all__ = ["DIED", "Heartbeat", "claim_lock", "fail_dead_trials", "is_real_failure", "mark_worker", "open_study",
           "prepare_dir", "tell_failure"]
