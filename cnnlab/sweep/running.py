"""Running a sweep: workers claim units from its Optuna study (under its lock), train them, resume a killed
worker's training from its checkpoint, and tell the trials their results; a sweep on one machine starts its
helper workers itself, each on its own device.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from .. import runs, tracking
from ..config import Config
from ..device import select_cuda_device
from ..errors import CnnlabError, ConfigError, Interrupted
from ..pipeline import resume_run, train_run
from ..plots import plot_curves
from ..studies import STORAGE_ENV, Claim, mark_worker, open_study, selection, tell_selected, work_loop
from .planning import Unit, cell_name, plan
from .state import create_sweep, load_select_metric, load_spec, unit_states
from .summary import format_table, results, save_results


def pick_unit(study, units: list[Unit]) -> Claim | None:
    """The next unit to train and its trials (one per epoch count it serves): a worker's `pick`, called
    by studies.claim under the lock."""
    states = unit_states(study, units)
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
            lambda: pick_unit(study, units),
            lambda claimed: _train_unit(out, base, claimed.job, threads, progress, parent, device),
            finish,
        )
    except Interrupted as exc:  # its trials are retried (from their checkpoints) on resume
        raise Interrupted(
            f"{str(exc).split('; resume with')[0]}; rerun the same cnnlab sweep command to resume"
        ) from None


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
