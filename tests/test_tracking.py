"""Watching runs: what TensorBoard and MLflow receive, read back with their own readers (EventAccumulator,
MlflowClient on a local sqlite store); resume appends to the same run without repeating a step; a logger
that fails (disk full, server gone) costs one warning line, never the run."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import SWEEP_FLAGS, kill_env, make_dataset

from cnnlab import runs, tracking
from cnnlab.cli import main
from cnnlab.config import parse_config
from cnnlab.errors import ConfigError
from cnnlab.pipeline import resume_run, train_run
from cnnlab.training import Callback

ARGS = ["--epochs", "4", "--batch-size", "8", "--eval-batch-size", "64", "--threads", "1", "--no-progress"]
EPOCH_KEYS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_nll",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_macro_f1",
    "lr",
    "time_s",
    "eval_time_s",
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("tracking") / "ds", 20)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts under ./mlruns
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    return f"sqlite:///{tmp_path}/mlflow.db"


def events(run_dir: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def f32(value: float) -> float:
    return float(np.float32(value))  # TensorBoard stores scalars as float32


def images_per_epoch(run_dir: str) -> int:
    saved = runs.read_json(os.path.join(run_dir, runs.CONFIG))
    return saved["data"]["sizes"]["training"] // saved["config"]["batch_size"] * saved["config"]["batch_size"]


def assert_tensorboard_matches_history(run_dir: str) -> None:
    """Every epoch once, each scalar equal to history.json (as float32); the final test figures."""
    history = runs.read_json(os.path.join(run_dir, runs.HISTORY_JSON))
    metrics = runs.read_json(os.path.join(run_dir, runs.METRICS))
    logged = scalars(events(run_dir))
    epochs = [r["epoch"] for r in history]
    for key in EPOCH_KEYS:
        assert logged[key] == [(r["epoch"], f32(r[key])) for r in history], key
    images = images_per_epoch(run_dir)
    assert logged["images_per_s"] == [(r["epoch"], f32(images / r["time_s"])) for r in history]
    assert logged["test_accuracy"] == [(epochs[-1], f32(metrics["test"]["accuracy"]))]
    assert logged["test_loss"] == [(epochs[-1], f32(metrics["test"]["loss"]))]
    for key in ("balanced_accuracy", "macro_f1"):
        assert logged[f"test_{key}"] == [(epochs[-1], f32(metrics["test"][key]))]


def hparams_of(run_dir: str) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = events(run_dir)
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    values = {}
    for key, value in start.session_start_info.hparams.items():
        values[key] = value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
    metrics = [m.name.tag for m in experiment.experiment.metric_infos]
    return {"hparams": values, "metrics": metrics}


def mlflow_run_id(run_dir: str) -> str:
    return runs.read_json(os.path.join(run_dir, runs.MLFLOW_RUN))["run_id"]


def assert_mlflow_matches_history(client, run_id: str, run_dir: str, retimed: int | None = None) -> None:
    """Every epoch once, equal to history.json; `retimed`: an epoch logged before a crash and trained
    again after it, whose first (kept) values differ from the history's in their timings only."""
    history = runs.read_json(os.path.join(run_dir, runs.HISTORY_JSON))
    metrics = runs.read_json(os.path.join(run_dir, runs.METRICS))
    images = images_per_epoch(run_dir)
    for key in (*EPOCH_KEYS, "images_per_s"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        expected = [
            (r["epoch"], pytest.approx(images / r["time_s"], rel=1e-12) if key == "images_per_s" else r[key])
            for r in history
        ]
        if retimed is not None and ("time" in key or key == "images_per_s"):
            logged, expected = [x for x in logged if x[0] != retimed], [x for x in expected if x[0] != retimed]
            assert [m.step for m in client.get_metric_history(run_id, key)].count(retimed) == 1
        assert logged == expected, key
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        test = [(m.step, m.value) for m in client.get_metric_history(run_id, f"test_{key}")]
        assert test == [(history[-1]["epoch"], metrics["test"][key])], key


# --- TensorBoard ------------------------------------------------------------------------------------------


def test_tensorboard_by_default_scalars_equal_history_hparams_and_images(dataset, tmp_path):
    pytest.importorskip("tensorboard")
    out = str(tmp_path / "run")
    assert main(["train", "--data", dataset, "--out", out, *ARGS, "--lr", "0.05"]) == 0  # --log auto
    assert_tensorboard_matches_history(out)
    saved = runs.read_json(os.path.join(out, runs.CONFIG))["config"]
    hp = hparams_of(out)
    assert hp["hparams"]["lr"] == pytest.approx(0.05) and hp["hparams"]["model"] == "fastnet"
    assert hp["hparams"]["epochs"] == 4 and hp["hparams"]["flip"] == "True"
    assert set(hp["hparams"]) == set(saved)
    assert {"val_accuracy", "test_accuracy"} <= set(hp["metrics"])
    images = events(out).Tags()["images"]
    assert {"confusion_matrix", "curves/accuracy", "curves/loss"} <= set(images)


def test_log_none_writes_no_events(dataset, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data", dataset, "--out", str(out), *ARGS, "--epochs", "1", "--log", "none"]) == 0
    assert not [n for n in os.listdir(out) if n.startswith("events.out.tfevents")]


def test_a_failing_tensorboard_writer_costs_one_warning(dataset, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", disk_full)
    out = tmp_path / "run"
    assert main(["train", "--data", dataset, "--out", str(out), *ARGS, "--log", "tensorboard"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and "tensorboard" in warnings[0] and "No space left" in warnings[0], err
    assert runs.is_complete(str(out))


def test_missing_package_asked_for_is_a_one_line_error(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tracking, "installed", lambda package: False)
    out = tmp_path / "run"
    assert main(["train", "--data", dataset, "--out", str(out), *ARGS, "--log", "tensorboard"]) == 2
    assert "pip install tensorboard (or --log none)" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--data", dataset, "--out", str(out), *ARGS, "--epochs", "1"]) == 0  # auto: none
    assert not [n for n in os.listdir(out) if n.startswith("events.out.tfevents")]


# --- MLflow -----------------------------------------------------------------------------------------------


def test_mlflow_params_metrics_and_artifacts(dataset, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    out = str(tmp_path / "run")
    assert main(["train", "--data", dataset, "--out", out, *ARGS, "--log", "mlflow", "--mlflow-uri", mlflow_uri]) == 0
    assert not [n for n in os.listdir(out) if n.startswith("events.out.tfevents")]  # tensorboard not asked for
    client = MlflowClient(mlflow_uri)
    run = client.get_run(mlflow_run_id(out))
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    saved = runs.read_json(os.path.join(out, runs.CONFIG))["config"]
    assert run.data.params == {k: str(v) for k, v in saved.items()}
    assert_mlflow_matches_history(client, run.info.run_id, out)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "metrics.json",
        "history.json",
        "config.json",
        "model.safetensors",
        "acc_plot.png",
        "loss_plot.png",
    } <= artifacts
    assert client.get_experiment(run.info.experiment_id).name == "cnnlab"


def test_a_password_in_the_mlflow_uri_is_refused_without_echoing_it(dataset, tmp_path, capsys):
    with pytest.raises(ConfigError, match="mlflow_uri") as info:
        parse_config({"mlflow_uri": "https://alice:hunter2@mlflow.example/"})
    assert "hunter2" not in str(info.value)
    assert parse_config({"mlflow_uri": "//[x"}).mlflow_uri == "//[x"  # not a URL: no crash here, MLflow will say
    assert (
        main(
            [
                "train",
                "--data",
                dataset,
                "--out",
                str(tmp_path / "r"),
                *ARGS,
                "--mlflow-uri",
                "http://alice:hunter2@127.0.0.1:1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "MLFLOW_TRACKING_PASSWORD" in err and "hunter2" not in err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_an_unreachable_mlflow_server_costs_one_warning(dataset, tmp_path, monkeypatch, capsys, where):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own knobs: fail fast
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    uri = f"http://127.0.0.1:{closed_port()}"
    if where == "flag":
        flags = ["--mlflow-uri", uri]
    else:  # a password given through MLflow's environment is never printed
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.replace("//", "//alice:hunter2@"))
        flags = []
    out = tmp_path / "run"
    assert main(["train", "--data", dataset, "--out", str(out), *ARGS, "--log", "mlflow", *flags]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and "mlflow" in warnings[0], err
    assert "hunter2" not in err
    assert runs.is_complete(str(out)) and not (out / runs.MLFLOW_RUN).exists()


# --- resume -----------------------------------------------------------------------------------------------


class CrashAfter(Callback):
    """Stands for a process killed after an epoch was logged but before its checkpoint was written."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, record, model):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_resume_after_a_crash_between_logging_and_checkpoint_repeats_no_step(dataset, tmp_path, mlflow_uri):
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient

    from cnnlab.presets import preset

    cfg = preset(
        "fast",
        data=dataset,
        epochs=4,
        batch_size=8,
        eval_batch_size=64,
        threads=1,
        progress=False,
        log="tensorboard,mlflow",
        mlflow_uri=mlflow_uri,
    )
    out = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, out, callbacks=(CrashAfter(3),))
    assert runs.load_checkpoint(out)["epoch"] == 3  # epoch 3 was logged, its checkpoint not written
    resume_run(out)
    assert_tensorboard_matches_history(out)
    client = MlflowClient(mlflow_uri)
    assert len(client.search_runs([client.get_experiment_by_name("cnnlab").experiment_id])) == 1
    assert client.get_run(mlflow_run_id(out)).info.status == "FINISHED"
    assert_mlflow_matches_history(client, mlflow_run_id(out), out, retimed=3)


@pytest.mark.parametrize(
    "point, logged, retimed",
    [
        ("3:7", [1, 2], None),  # mid-epoch: epochs 1 and 2 logged and checkpointed
        ("3:end", [1, 2, 3], 3),  # epoch 3 logged, its checkpoint not written: it trains again on resume
    ],
)
def test_sigkill_then_resume_logs_every_epoch_once(tmp_path, mlflow_uri, monkeypatch, point, logged, retimed):
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient

    data = make_dataset(tmp_path / "ds", 60)
    out = str(tmp_path / "run")
    # the run's config keeps no URI: resume finds it the same way
    env = kill_env(point, {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnlab.cli",
            "train",
            "--data",
            data,
            "--out",
            out,
            *ARGS,
            "--epochs",
            "6",
            "--seed",
            "3",
            "--log",
            "tensorboard,mlflow",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    client = MlflowClient(mlflow_uri)
    assert runs.load_checkpoint(out)["epoch"] == 3  # the epoch the checkpoint resumes at
    assert sorted(m.step for m in client.get_metric_history(mlflow_run_id(out), "time_s")) == logged
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert main(["train", "--resume", out]) == 0
    assert_tensorboard_matches_history(out)
    assert len(client.search_runs([client.get_experiment_by_name("cnnlab").experiment_id])) == 1
    # an epoch logged before the kill trains again with the same figures and new timings; MLflow keeps the
    # first (as after a crash)
    assert_mlflow_matches_history(client, mlflow_run_id(out), out, retimed=retimed)


# --- sweeps -----------------------------------------------------------------------------------------------


def test_a_sweep_is_a_parent_run_with_one_child_per_training(dataset, tmp_path, mlflow_uri):
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                "--data",
                dataset,
                "--out",
                str(out),
                "--grid",
                "lr=0.05,0.1",
                "--seeds",
                "1",
                "--epochs",
                "2",
                *SWEEP_FLAGS,
                "--log",
                "tensorboard,mlflow",
                "--mlflow-uri",
                mlflow_uri,
            ]
        )
        == 0
    )
    trainings = sorted(name for name in os.listdir(out / "runs") if os.path.isdir(out / "runs" / name))
    assert len(trainings) == 2
    for name in trainings:  # `tensorboard --logdir SWEEP_DIR` shows each as the sub-run runs/<name>
        assert_tensorboard_matches_history(str(out / "runs" / name))
        assert hparams_of(str(out / "runs" / name))["hparams"]["lr"] in (pytest.approx(0.05), pytest.approx(0.1))
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("cnnlab").experiment_id
    parent = runs.read_json(str(out / runs.MLFLOW_RUN))["run_id"]
    assert client.get_run(parent).info.status == "FINISHED"
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_name for r in children) == trainings
    assert {r.info.run_id for r in children} == {mlflow_run_id(str(out / "runs" / n)) for n in trainings}
    assert len(client.search_runs([experiment])) == 3
    # the same command again resumes the sweep: nothing new is logged
    assert (
        main(
            [
                "sweep",
                "--data",
                dataset,
                "--out",
                str(out),
                "--grid",
                "lr=0.05,0.1",
                "--seeds",
                "1",
                "--epochs",
                "2",
                *SWEEP_FLAGS,
                "--log",
                "tensorboard,mlflow",
                "--mlflow-uri",
                mlflow_uri,
            ]
        )
        == 0
    )
    assert len(client.search_runs([experiment])) == 3


def test_a_search_is_a_parent_run_with_one_child_per_trial(dataset, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "search"
    assert (
        main(
            [
                "sweep",
                "--data",
                dataset,
                "--out",
                str(out),
                "--search",
                "tpe",
                "--trials",
                "2",
                "--param",
                "lr=0.01..0.1:log",
                "--epochs",
                "2",
                *SWEEP_FLAGS,
                "--log",
                "mlflow",
                "--mlflow-uri",
                mlflow_uri,
            ]
        )
        == 0
    )
    client = MlflowClient(mlflow_uri)
    parent = runs.read_json(str(out / runs.MLFLOW_RUN))["run_id"]
    experiment = client.get_experiment_by_name("cnnlab").experiment_id
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_name for r in children) == sorted(os.listdir(out / "runs"))
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)


def test_redact_hides_passwords_in_any_message():
    text = "cannot reach https://alice:hunter2@host:5000/api (postgresql://u:p4ss@db/x)"
    assert tracking.redact(text) == "cannot reach https://alice:***@host:5000/api (postgresql://u:***@db/x)"
    assert json.dumps(tracking.redact("sqlite:////tmp/mlflow.db")) == '"sqlite:////tmp/mlflow.db"'
