"""Watching runs live: TensorBoard event files in the run directory, and/or an MLflow run.

`Config.log` picks the loggers: auto (TensorBoard when the `tensorboard` package is installed), none,
tensorboard, mlflow, or both. Per epoch each logger receives the history record's figures (loss, accuracy,
val_loss, val_nll, val_accuracy, val_balanced_accuracy, val_macro_f1, val_top5_accuracy with more than 5
classes, lr, time_s, eval_time_s, test_* where evaluated) and images_per_s; at the start
the config (TensorBoard's HParams / MLflow's params); at the end the test figures and, for TensorBoard,
the confusion matrix and the curves as images, for MLflow the run directory's files as artifacts.

Logging never stops training: the first exception of a logger prints one warning line and turns that
logger off. A resumed run appends to the same TensorBoard run (purge_step: a step logged before the
crash but not checkpointed is dropped by readers) and to the same MLflow run (its id is kept in the run
directory; the epochs it already holds are not sent again). Credentials come only from MLflow's own
environment variables; a password in any message is replaced by ***.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile
import time
import urllib.parse

from . import runs
from .config import Config
from .errors import ConfigError, Interrupted, first_line
from .plots import plot_confusion
from .training import Callback

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # logger -> the package it needs
TEST_FIGURES = ("loss", "accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy", "ece", "brier")  # test_<name>
EPOCH_SCALARS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_nll",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_macro_f1",
    "val_top5_accuracy",
    "val_ece",
    "val_brier",
    "lr",
    "images_per_s",
    "time_s",
    "eval_time_s",
    *(f"test_{name}" for name in TEST_FIGURES),
)
EXPERIMENT = "cnnlab"  # the MLflow experiment unless MLFLOW_EXPERIMENT_NAME / MLFLOW_EXPERIMENT_ID say otherwise


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def loggers(log: str) -> list[str]:
    """The logger names of a `log` value; a missing package asked for by name is a one-line error."""
    if log == "auto":
        return ["tensorboard"] if installed("tensorboard") else []
    names = [] if log == "none" else log.split(",")
    for name in names:
        if not installed(PACKAGES[name]):
            raise ConfigError(
                f"config key 'log': {name} needs the {PACKAGES[name]} package; "
                f"pip install {PACKAGES[name]} (or --log none)"
            )
    return names


_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):[^\s@/]*@")
_BROKEN_USERINFO = re.compile(r"(?:^|[\s/])[^\s:/@]+:(?!//)([^\s@]+)@")  # user:password@ without a scheme://


def passwords(url: str | None) -> list[str]:
    """The password of a URL, as written and decoded, longest first (none: an empty list); also of a URL
    too broken to parse (`postgresql//user:password@host`)."""
    found = set()
    with contextlib.suppress(Exception):
        raw = urllib.parse.urlsplit(url or "").password  # the text between the first ':' and the last '@'
        found |= {raw, urllib.parse.unquote(raw)}
    match = None if found else _BROKEN_USERINFO.search(url or "")
    if match:
        found.add(match.group(1))
    return sorted((p for p in found if p), key=len, reverse=True)


def redact(text: str, url: str | None = None) -> str:
    """`text` (a message, or a URL itself) with the password of every URL in it replaced by ***; with
    `url` (one that `text` may quote, e.g. the --storage URL in a driver's error), that URL's password
    wherever it appears, as written or decoded."""
    for password in passwords(url):
        text = text.replace(f":{password}@", ":***@").replace(password, "***")
    return _USERINFO.sub(r"\1:***@", text)


def _warn(name: str, exc: BaseException) -> None:
    print(
        f"warning: {name} logging stopped ({redact(first_line(exc, 300))}); the training goes on without it",
        file=sys.stderr,
        flush=True,
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


class TensorBoardLogger:
    """Event files in the run directory itself: `tensorboard --logdir RUN_DIR` shows the run, and
    `--logdir SWEEP_DIR` shows every training of a sweep as the sub-run runs/<name>."""

    name = "tensorboard"

    def __init__(self, cfg: Config, run_dir: str, resume_epoch: int | None):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        fresh = not any(n.startswith("events.out.tfevents") for n in os.listdir(run_dir))
        # purge_step: readers drop what an earlier process logged from this epoch on (logged, then
        # killed before the checkpoint), so no step is ever shown twice
        self.writer = SummaryWriter(run_dir, purge_step=None if fresh or resume_epoch is None else resume_epoch)
        self.logged: set[tuple[str, int]] = set()
        # the HParams tab: the config, and the figures to compare runs by (torch would turn a bool into
        # the number 1.0, so booleans go as the strings True / False, as MLflow shows them)
        values = {k: str(v) if isinstance(v, bool) else v for k, v in cfg.to_dict().items()}
        experiment, start, self.end = hparams(
            values,
            {
                f"{split}_{name}": 0.0
                for split in ("val", "test")
                for name in ("accuracy", "balanced_accuracy", "macro_f1")
            },
        )
        if fresh:
            self.writer.file_writer.add_summary(experiment)
            self.writer.file_writer.add_summary(start)
        self.writer.flush()

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, epoch)
            self.logged.add((key, epoch))
        self.writer.flush()  # a killed process loses nothing it logged

    def finish(self, run_dir: str, epoch: int, metrics: dict, classes: list[str]) -> None:
        import numpy as np
        from PIL import Image

        test = metrics.get("test")
        if test is not None:
            self.log_epoch(
                epoch,
                {f"test_{k}": test[k] for k in TEST_FIGURES if k in test and (f"test_{k}", epoch) not in self.logged},
            )
            with tempfile.TemporaryDirectory() as tmp:
                path = plot_confusion(test["confusion"], classes, os.path.join(tmp, "confusion.png"))
                with Image.open(path) as image:
                    self.writer.add_image(
                        "confusion_matrix", np.asarray(image.convert("RGB")), epoch, dataformats="HWC"
                    )
        for tag, name in (("curves/accuracy", "acc_plot.png"), ("curves/loss", "loss_plot.png")):
            path = os.path.join(run_dir, name)
            if os.path.exists(path):
                with Image.open(path) as image:  # the study's 1920x1440 figures, at a screen's size
                    image = image.convert("RGB")
                image.thumbnail((800, 800))
                self.writer.add_image(tag, np.asarray(image), epoch, dataformats="HWC")
        self.writer.file_writer.add_summary(self.end)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


def _experiment_id(client) -> str:
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it meanwhile
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _mlflow_client(cfg: Config):
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its "creating tables" lines on every start
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=cfg.mlflow_uri or None)  # None: MLFLOW_TRACKING_URI, else ./mlflow.db


def _open_mlflow_run(client, cfg: Config, folder: str, tags: dict) -> tuple[str, bool]:
    """(run id, whether it is new): the run whose id `folder` keeps, set running again, or a new one."""
    path = os.path.join(folder, runs.MLFLOW_RUN)
    if os.path.exists(path):
        run_id = runs.read_json(path)["run_id"]
        client.update_run(run_id, status="RUNNING")
        return run_id, False
    from mlflow.entities import Param

    run = client.create_run(
        _experiment_id(client),
        run_name=os.path.basename(os.path.abspath(folder)),
        tags={"cnnlab.dir": os.path.abspath(folder), **tags},
    )
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in cfg.to_dict().items()])
    runs.write_json(path, {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id})
    return run.info.run_id, True


class MlflowLogger:
    """One MLflow run per run directory (a child of the sweep's run when `parent` is given)."""

    name = "mlflow"
    ARTIFACTS = (
        runs.CONFIG,
        runs.HISTORY_JSON,
        runs.HISTORY_CSV,
        runs.METRICS,
        runs.WEIGHTS,
        "acc_plot.png",
        "loss_plot.png",
        "acc_plot.jpg",
        "loss_plot.jpg",
    )

    def __init__(self, cfg: Config, run_dir: str, resume_epoch: int | None, parent: str | None):
        self.client = _mlflow_client(cfg)
        self.run_id, new = _open_mlflow_run(self.client, cfg, run_dir, {"mlflow.parentRunId": parent} if parent else {})
        # the epochs this run already holds (a resume after a crash between logging and checkpoint)
        self.last_epoch = (
            0 if new else max((m.step for m in self.client.get_metric_history(self.run_id, "loss")), default=0)
        )
        self.finished = False

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if epoch <= self.last_epoch:
            return
        stamp = _now_ms()
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), stamp, epoch) for k, v in values.items()])

    def finish(self, run_dir: str, epoch: int, metrics: dict, classes: list[str]) -> None:
        from mlflow.entities import Metric

        test = metrics.get("test")
        if test is not None:
            logged = {m.step for m in self.client.get_metric_history(self.run_id, "test_accuracy")}
            if epoch not in logged:
                self.client.log_batch(
                    self.run_id,
                    metrics=[Metric(f"test_{k}", float(test[k]), _now_ms(), epoch) for k in TEST_FIGURES if k in test],
                )
        for name in self.ARTIFACTS:
            if os.path.exists(os.path.join(run_dir, name)):
                self.client.log_artifact(self.run_id, os.path.join(run_dir, name))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.finished = True

    def close(self, status: str) -> None:
        if not self.finished:
            self.client.set_terminated(self.run_id, status)


class Tracker(Callback):
    """The run's loggers behind one guard: a logger that raises is turned off with one warning line.
    Use as a context manager around the training; call `finish` once the run's files are written."""

    def __init__(
        self,
        cfg: Config,
        run_dir: str,
        images_per_epoch: int,
        resume_epoch: int | None = None,
        parent: str | None = None,
    ):
        self.images_per_epoch = images_per_epoch
        self.active: list = []
        makers = {
            "tensorboard": lambda: TensorBoardLogger(cfg, run_dir, resume_epoch),
            "mlflow": lambda: MlflowLogger(cfg, run_dir, resume_epoch, parent),
        }
        for name in loggers(cfg.log):
            try:
                self.active.append(makers[name]())
            except Exception as exc:
                _warn(name, exc)

    def _each(self, method: str, *args) -> None:
        for logger in list(self.active):
            try:
                getattr(logger, method)(*args)
            except Exception as exc:
                self.active.remove(logger)
                _warn(logger.name, exc)
                if method != "close":
                    try:
                        logger.close("FAILED")
                    except Exception:
                        pass  # already warned once for this logger

    def on_epoch_end(self, epoch: int, record: dict, model) -> None:
        values = {k: record[k] for k in EPOCH_SCALARS if record.get(k) is not None}
        if record.get("time_s"):
            values["images_per_s"] = self.images_per_epoch / record["time_s"]
        self._each("log_epoch", epoch, {k: values[k] for k in EPOCH_SCALARS if k in values})

    def finish(self, run_dir: str, history: list[dict], metrics: dict, classes: list[str]) -> None:
        if history:
            self._each("finish", run_dir, history[-1]["epoch"], metrics, classes)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        status = (
            "FINISHED"
            if kind is None
            else "KILLED"
            if kind is not None and issubclass(kind, (Interrupted, KeyboardInterrupt))
            else "FAILED"
        )
        self._each("close", status)
        self.active = []


def open_parent(cfg: Config, sweep_dir: str) -> str | None:
    """The MLflow run of a sweep or search (its id kept in SWEEP_DIR), parent of its trainings' runs;
    None when MLflow is not asked for or cannot be reached (one warning line)."""
    if "mlflow" not in loggers(cfg.log):
        return None
    try:
        return _open_mlflow_run(_mlflow_client(cfg), cfg, sweep_dir, {"cnnlab.kind": "sweep"})[0]
    except Exception as exc:
        _warn("mlflow", exc)
        return None


def parent_of(sweep_dir: str) -> str | None:
    """The id of the sweep's MLflow run that open_parent kept in SWEEP_DIR, if any (for its workers)."""
    path = os.path.join(sweep_dir, runs.MLFLOW_RUN)
    return runs.read_json(path)["run_id"] if os.path.exists(path) else None


def close_parent(cfg: Config, run_id: str | None, status: str = "FINISHED") -> None:
    if run_id is None:
        return
    try:
        _mlflow_client(cfg).set_terminated(run_id, status)
    except Exception as exc:
        _warn("mlflow", exc)


__all__ = ["Tracker", "close_parent", "installed", "loggers", "open_parent", "parent_of", "passwords", "redact"]
