"""Orchestration: Config -> data -> model -> train -> files. The only layer below the CLI that reads a
whole Config; sweep, report and predict build on it."""
from __future__ import annotations

import os
import time

import torch

from . import runs
from .config import Config, parse_config
from .data import DeviceLoader, channel_stats, load_dataset
from .data.dataset import Dataset
from .device import resolve_device, set_threads, use_bf16
from .errors import CnnlabError, ConfigError
from .evaluate import evaluate
from .models import create_model, default_input_size
from .plots import plot_curves
from .train import Callback, train


def load_data(cfg: Config) -> Dataset:
    return load_dataset(cfg.data_path(), val_fraction=cfg.val_fraction, split=cfg.split, seed=cfg.seed,
                        image_size=cfg.image_size, interpolation=cfg.interpolation, subset=cfg.subset,
                        progress=cfg.progress)


def preprocessing(cfg: Config, dataset: Dataset) -> dict:
    """What turns stored uint8 images into model inputs; saved with the run so predict can repeat it."""
    if cfg.scaling == "rescale":
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    else:
        mean, std = channel_stats(dataset.train.images)
    height, width = dataset.image_shape[:2]
    return {"mean": mean, "std": std, "image_size": [height, width],
            "input_size": cfg.input_size or height, "interpolation": cfg.interpolation}


def make_loader(split, cfg: Config, prep: dict, device: torch.device, training: bool) -> DeviceLoader:
    common = dict(mean=prep["mean"], std=prep["std"], input_size=prep["input_size"],
                  interpolation=prep["interpolation"], seed=cfg.seed)
    if training:
        return DeviceLoader(split.images, split.labels, cfg.batch_size, device, shuffle=True, drop_last=True,
                            flip=cfg.flip, translate=cfg.translate, cutout=cfg.cutout, **common)
    return DeviceLoader(split.images, split.labels, cfg.eval_batch_size, device, **common)


def build_model(cfg: Config, num_classes: int, input_size: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=num_classes)
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, 3, input_size, input_size))
        model.train()
    except RuntimeError:
        raise ConfigError(f"model {cfg.model!r} does not accept {input_size}x{input_size} inputs; set "
                          "input_size to the size it was built for (see `cnnlab summary`)") from None
    return model.to(device, memory_format=torch.channels_last)


def train_run(cfg: Config, out: str, callbacks: tuple[Callback, ...] = ()) -> dict:
    """Train `cfg` and save everything into the new run directory `out`; returns the test metrics."""
    runs.check_new_run_dir(out)
    default_input_size(cfg.model)  # an unknown model name fails here, before any data is read
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    bf16 = use_bf16(cfg.precision, device)
    dataset = load_data(cfg)
    if cfg.batch_size > len(dataset.train):
        raise ConfigError(f"config key 'batch_size' ({cfg.batch_size}) is larger than the "
                          f"{len(dataset.train)} training images; lower it")
    if cfg.progress:
        print("\n".join(dataset.found_lines()))
    prep = preprocessing(cfg, dataset)
    model = build_model(cfg, len(dataset.classes), prep["input_size"], device)
    train_loader = make_loader(dataset.train, cfg, prep, device, training=True)
    if hasattr(model, "init_whitening"):
        sample = make_loader(dataset.train, cfg, prep, device, training=False)
        first_inputs, _ = next(iter(sample))
        model.init_whitening(first_inputs)
    val_loader = make_loader(dataset.val, cfg, prep, device, training=False) if dataset.val else None
    runs.create_run_dir(out)
    data_info = {"source": dataset.source, "classes": dataset.classes,
                 "found": dict(zip(dataset.subsets(), dataset.found_lines())),
                 "sizes": {name: len(split) for name, split in dataset.subsets().items()},
                 "preprocessing": prep, "device": str(device), "bf16": bf16}
    runs.save_config(out, cfg.to_dict(), data_info)
    start = time.perf_counter()
    history = train(model, train_loader, val_loader, cfg, dataset.classes, bf16, callbacks)
    train_s = time.perf_counter() - start
    runs.save_history(out, history)
    runs.save_weights(out, model)
    plot_curves(history, out)
    metrics: dict = {"train_time_s": round(train_s, 3), "epochs_run": len(history)}
    if dataset.test is not None:
        test_loader = make_loader(dataset.test, cfg, prep, device, training=False)
        metrics["test"] = evaluate(model, test_loader, dataset.classes, bf16, cfg.tta)
    runs.save_metrics(out, metrics)
    runs.mark_complete(out)
    return metrics


def load_trained(run_dir: str, device: torch.device | None = None) -> tuple[torch.nn.Module, Config, dict]:
    """(model with its weights, config, saved run) of a finished run."""
    run = runs.load_run(run_dir)
    try:
        cfg = parse_config(run["config"])
    except ConfigError as exc:
        raise CnnlabError(f"{os.path.join(run_dir, runs.CONFIG)}: {exc}") from None
    device = device or resolve_device(cfg.device)
    model = create_model(cfg.model, num_classes=len(run["data"]["classes"]))
    runs.load_weights(run_dir, model)
    return model.to(device, memory_format=torch.channels_last).eval(), cfg, run


def evaluate_run(run_dir: str, data: str | None = None) -> dict:
    """Test metrics of a finished run on its dataset's test split (or on `data`'s)."""
    model, cfg, run = load_trained(run_dir)
    if data:
        cfg = cfg.replace(data=data)
    cfg = cfg.replace(progress=False)
    set_threads(cfg.threads)
    dataset = load_data(cfg)
    if dataset.classes != run["data"]["classes"]:
        raise CnnlabError(f"{cfg.data_path()}: its classes differ from the run's "
                          f"({', '.join(run['data']['classes'])})")
    split = dataset.test if dataset.test is not None else dataset.train
    device = next(model.parameters()).device
    loader = make_loader(split, cfg, run["data"]["preprocessing"], device, training=False)
    bf16 = use_bf16(cfg.precision, device)
    metrics = evaluate(model, loader, dataset.classes, bf16, cfg.tta)
    metrics["split"] = "test" if dataset.test is not None else "all images (no test folder)"
    return metrics


__all__ = ["build_model", "evaluate_run", "load_data", "load_trained", "make_loader", "preprocessing",
           "train_run"]
