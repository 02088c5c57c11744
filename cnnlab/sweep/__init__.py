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

The jobs, one module each, importing one way: planning (the grid, cells, units), state (the spec and
each unit's state in the study), summary (statistics, verdicts, the table and files), running (workers,
claims, the sweep from start to results).
"""

from .planning import NAMED_GRIDS, Unit, cell_name, cells_of, check_data, describe_plan, parse_grid, plan
from .running import Workers, run_sweep, work, work_together, worker_devices, worker_threads
from .state import create_sweep, load_select_metric, load_spec
from .summary import format_table, results, save_results

__all__ = [
    "NAMED_GRIDS",
    "Unit",
    "Workers",
    "cell_name",
    "cells_of",
    "check_data",
    "create_sweep",
    "describe_plan",
    "format_table",
    "load_select_metric",
    "load_spec",
    "parse_grid",
    "plan",
    "results",
    "run_sweep",
    "save_results",
    "work",
    "work_together",
    "worker_devices",
    "worker_threads",
]
