"""The run directory: the one place that knows its file names.

    config.json        resolved config, seed, versions, data facts (classes, sizes, normalisation)
    history.json/.csv  one record per epoch
    metrics.json       test metrics (accuracy, balanced accuracy, macro-F1, per class, confusion matrix)
    skipped.json       the images --skip-bad-images left out, {folder: [{path, reason}]} (only then)
    model.safetensors  the weights
    acc_plot.jpg/.png, loss_plot.jpg/.png
    checkpoint.pt      the resumable training state while the run is unfinished (removed when complete)
    COMPLETE           written last: a directory without it is an unfinished run
    events.out.tfevents.*  TensorBoard's event files (--log tensorboard)
    mlflow_run.json    the id of the run's MLflow run (--log mlflow), so that a resume appends to it
Every file is written with files.write_atomic, so none is ever half-written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
from typing import Any

import torch
import torch.nn as nn

from .device import tf32_state
from .errors import CnnlabError, first_line
from .files import create_new_dir, write_atomic

CONFIG, HISTORY_JSON, HISTORY_CSV, METRICS, WEIGHTS, COMPLETE, CHECKPOINT = (
    "config.json",
    "history.json",
    "history.csv",
    "metrics.json",
    "model.safetensors",
    "COMPLETE",
    "checkpoint.pt",
)
SKIPPED = "skipped.json"
MLFLOW_RUN = "mlflow_run.json"  # in a run directory, and in a sweep directory for the sweep's parent run


def check_new_run_dir(path: str) -> None:
    """A run never overwrites another: `path` must not exist or be an empty folder (checked early, before
    the data is read; create_run_dir claims it exclusively)."""
    if os.path.isfile(path):
        raise CnnlabError(f"{path}: is a file; choose another --out")
    if os.path.isdir(path) and os.listdir(path):
        raise CnnlabError(f"{path}: already holds files; choose another --out or delete it first")


def create_run_dir(path: str) -> str:
    return create_new_dir(path)


def write_json(path: str, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def json_round_trip(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples become lists), to compare with a saved file."""
    return json.loads(json.dumps(obj))


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; is this a cnnlab run directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path}: damaged ({exc}); the run cannot be read") from None


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    import numpy

    from .version import __version__

    return {
        "cnnlab": __version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # whether fp32 matmuls and convolutions could use TF32 on the GPU (device.tf32_for), cuDNN's algorithm search
        "tf32": tf32_state() if torch.cuda.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark if torch.cuda.is_available() else None,
    }


def save_config(run_dir: str, config: dict, data_info: dict) -> None:
    write_json(
        os.path.join(run_dir, CONFIG),
        {"config": config, "seed": config["seed"], "data": data_info, "environment": environment()},
    )


def save_history(run_dir: str, history: list[dict]) -> None:
    write_json(os.path.join(run_dir, HISTORY_JSON), history)
    if history:
        buffer = io.StringIO()
        fields = list(dict.fromkeys(key for record in history for key in record))  # test_* only on some epochs
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
        write_atomic(os.path.join(run_dir, HISTORY_CSV), buffer.getvalue())


def save_metrics(run_dir: str, metrics: dict) -> None:
    write_json(os.path.join(run_dir, METRICS), metrics)


def save_skipped(run_dir: str, skipped: dict[str, list[dict]]) -> None:
    """The unreadable images left out of each folder (train, test): [{path, reason}] in folder order."""
    write_json(os.path.join(run_dir, SKIPPED), skipped)


def load_skipped(run_dir: str) -> dict[str, list[dict]]:
    """What save_skipped wrote; {} for a run that skipped nothing."""
    path = os.path.join(run_dir, SKIPPED)
    return read_json(path) if os.path.exists(path) else {}


def save_weights(run_dir: str, model: nn.Module) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(os.path.join(run_dir, WEIGHTS), save(state))


def load_weights(run_dir: str, model: nn.Module) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.path.join(run_dir, WEIGHTS)
    try:
        state = load_file(path)
        model.load_state_dict(state)
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; the run has no saved weights") from None
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise CnnlabError(f"{path}: cannot load the weights into {type(model).__name__} ({first_line(exc)})") from None


def save_checkpoint(run_dir: str, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(os.path.join(run_dir, CHECKPOINT), buffer.getvalue())


def load_checkpoint(run_dir: str) -> dict:
    """The training state; loaded with weights_only=True, so a checkpoint cannot run code."""
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.exists(path):
        raise CnnlabError(f"{path}: missing; the run stopped before its first checkpoint, start it again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise CnnlabError(
            f"{path}: damaged or not a cnnlab checkpoint ({first_line(exc, 200)}); start the run again"
        ) from None
    needed = {"model", "optimizer", "scheduler", "rng", "epoch", "step", "sums", "history"}
    if not isinstance(state, dict) or not needed <= set(state):
        raise CnnlabError(f"{path}: not a cnnlab checkpoint (missing fields); start the run again")
    return state


def is_complete(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, COMPLETE))


def mark_complete(run_dir: str) -> None:
    write_atomic(os.path.join(run_dir, COMPLETE), "")
    checkpoint = os.path.join(run_dir, CHECKPOINT)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)


def temperature(run: dict) -> float | None:
    """The temperature a saved run's logits are divided by (metrics.json's calibration, fitted on its
    validation split at the end of training); None where it has none (--no-calibrate, no validation split,
    or saved before calibration existed)."""
    return ((run.get("metrics") or {}).get("calibration") or {}).get("temperature")


def load_run(run_dir: str) -> dict:
    """The saved config, history and metrics of a finished run."""
    if not os.path.isdir(run_dir):
        raise CnnlabError(f"{run_dir}: no such run directory")
    if not os.path.exists(os.path.join(run_dir, COMPLETE)):
        raise CnnlabError(f"{run_dir}: the run is incomplete (no {COMPLETE} marker); it was interrupted or failed")
    run = read_json(os.path.join(run_dir, CONFIG))
    run["history"] = read_json(os.path.join(run_dir, HISTORY_JSON))
    metrics_path = os.path.join(run_dir, METRICS)
    run["metrics"] = read_json(metrics_path) if os.path.exists(metrics_path) else None
    return run
