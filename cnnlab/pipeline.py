"""Orchestration: Config -> data -> model -> train -> files, and back from files to a model.
Sweep, search, report and predict build on it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass

import numpy as np
import torch

from . import distributed, runs, tracking
from .adaptation import adapt_to_dataset, adapt_to_imbalance
from .calibration import figures, fit_temperature
from .config import Config, check_early_size, saved_config, size_hw
from .data import (
    Augmentation,
    Decoding,
    DeviceLoader,
    Feed,
    Holding,
    Preprocessing,
    Sampling,
    Splitting,
    channel_stats,
    read_dataset,
)
from .data.dataset import Dataset, Split
from .data.loader import class_counts
from .device import (
    peak_device_memory,
    peak_memory,
    reset_peak_device_memory,
    resolve_device,
    set_threads,
    tf32_for,
    use_bf16,
)
from .errors import CheckpointMismatch, CnnlabError, ConfigError, Interrupted
from .evaluation import TestTimeAugmentation, evaluate, metrics_from_logits, predict_batches
from .models import create_model, create_pretrained, default_input_size, input_config, read_state_dict, transfer_weights
from .models.upscale import upscale_in_first_conv
from .plots import plot_curves
from .training import Callback, TrainControl, train


def model_input_hw(cfg: Config) -> tuple[int, int]:
    """The size fed to the model: input_size, else the model's own (its registered side)."""
    return size_hw(cfg.input_size) or (default_input_size(cfg.model),) * 2


def load_data(cfg: Config, image_size: tuple[int, int] | None = None) -> Dataset:
    """The dataset as `cfg` says; `image_size` (a run's stored size) overrides the config's choice."""
    decoding = Decoding(
        image_size=image_size or size_hw(cfg.image_size),
        interpolation=cfg.interpolation,
        resize=cfg.resize,
        exif=cfg.exif,
        fallback_size=model_input_hw(cfg),
        skip_bad=cfg.skip_bad_images,
        memory_budget=int(cfg.memory_gb * 1e9) or None,
    )
    return read_dataset(cfg.data_path(), decoding, Splitting.of(cfg), progress=cfg.progress)


def starting_stats(cfg: Config) -> tuple[list[float], list[float]] | None:
    """The mean/std (of x/255) the starting weights were trained with: the --init-from run's, else a timm
    model's own (its pretrained cfg's); None for cnnlab's models, which take the dataset's."""
    if cfg.init_from:
        prep = runs.read_json(os.path.join(cfg.init_from, runs.CONFIG))["data"]["preprocessing"]
        return list(prep["mean"]), list(prep["std"])
    own = input_config(cfg.model)
    return (list(own["mean"]), list(own["std"])) if own["mean"] is not None else None


def preprocessing(cfg: Config, dataset: Dataset) -> Preprocessing:
    """What turns stored uint8 images into model inputs; saved with the run so predict can repeat it."""
    if cfg.scaling == "rescale":
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    elif cfg.scaling == "model" and starting_stats(cfg) is not None:
        mean, std = starting_stats(cfg)
    else:
        mean, std = channel_stats(dataset.train)
    height, width = dataset.image_shape[:2]
    return Preprocessing(
        mean,
        std,
        (height, width),
        tuple(size_hw(cfg.input_size) or (height, width)),
        cfg.interpolation,
        cfg.resize,
        cfg.exif,
    )


CPU_IN_PLACE_BYTES = 1e9


def should_stream(split: Split, cfg: Config, device: torch.device) -> bool:
    """Whether a split stays on the host, streamed a batch at a time: when it is larger than
    device_memory_gb, or on a GPU without that setting, than half its free memory. On a CPU the images
    are used in place, a memory map of the cache, up to CPU_IN_PLACE_BYTES; a larger split is read from
    the cache file a batch at a time, so that the process holds batches, not every page of the map it
    has touched (by the end of an epoch, the whole split)."""
    if cfg.device_memory_gb:
        return split.nbytes > cfg.device_memory_gb * 1e9
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return split.nbytes > free // 2
    return isinstance(split.stored, np.memmap) and split.nbytes > CPU_IN_PLACE_BYTES


def upscale_in_model(model: torch.nn.Module, cfg: Config, prep: Preprocessing) -> bool:
    """Whether `model` takes the stored images as they are, its input layer computing what it would from
    their nearest upscale to the input size (models/upscale.py: exact to float rounding, and the upscaled
    batch never exists): where the upscale is by whole factors and no augmentation works at the input size
    (cutout, random-resized crops, early_size). The study's 32 -> 256 AlexNet is the case; every other model
    is left as it is."""
    if prep.interpolation != "nearest" or cfg.cutout or cfg.rrc_scale_min or cfg.early_size:
        return False
    (height, width), (in_h, in_w) = prep.image_size, prep.input_size
    if in_h % height or in_w % width:
        return False
    return upscale_in_first_conv(model, (in_h // height, in_w // width))


def augmentation(cfg: Config) -> Augmentation:
    return Augmentation(
        flip=cfg.flip,
        flip_alternate=cfg.flip_alternate,
        translate=cfg.translate,
        cutout=cfg.cutout,
        crop_scale=cfg.rrc_scale_min,
        brightness=cfg.brightness,
        contrast=cfg.contrast,
        early_size=cfg.early_size,
        early_epochs=cfg.early_epochs,
    )


def make_loader(
    split, cfg: Config, prep: Preprocessing, device: torch.device, training: bool, at_stored_size: bool = False
) -> DeviceLoader:
    """Batches of `split` for a model fed as `prep` says; `at_stored_size` (upscale_in_model): the stored
    images as they are, not upscaled to the input size."""
    feed = Feed(prep.mean, prep.std, prep.image_size if at_stored_size else prep.input_size, prep.interpolation)
    stream = should_stream(split, cfg, device)
    if training:  # under torchrun, this rank's share of every global batch
        sampling = Sampling(
            shuffle=True,
            balanced=cfg.sampler == "balanced",
            drop_last=True,
            seed=cfg.seed,
            shard=(distributed.rank(), distributed.world_size()),
        )
        return DeviceLoader(
            split.stored,
            split.labels,
            cfg.batch_size,
            device,
            hold=Holding(split.index, stream),
            feed=feed,
            augment=augmentation(cfg),
            sampling=sampling,
        )
    return DeviceLoader(
        split.stored,
        split.labels,
        cfg.eval_batch_size,
        device,
        hold=Holding(split.index, stream),
        feed=feed,
        sampling=Sampling(seed=cfg.seed),
    )


def accepts(model: torch.nn.Module, size: tuple[int, int]) -> bool:
    """Whether `model` runs on inputs of `size` (height, width); it is left in training mode."""
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(2, 3, *size))
        return True
    except RuntimeError:
        return False
    finally:
        model.train()


def build_model(cfg: Config, num_classes: int, input_size: tuple[int, int], device: torch.device) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    if cfg.pretrained:
        model = create_pretrained(cfg.model, num_classes, cfg.pretrained)
    else:
        model = create_model(cfg.model, num_classes=num_classes)
    if not accepts(model, input_size):
        raise ConfigError(
            f"model {cfg.model!r} does not accept {input_size[0]}x{input_size[1]} inputs; set "
            "input_size to the size it was built for (see `cnnlab summary`)"
        )
    if cfg.early_size and not accepts(model, (cfg.early_size, cfg.early_size)):
        raise ConfigError(
            f"model {cfg.model!r} does not accept {cfg.early_size}x{cfg.early_size} inputs (config key "
            "'early_size'); raise early_size, or 0 (off)"
        )
    return model.to(device, memory_format=torch.channels_last)


def adapt_input_size(
    cfg: Config, image_size: tuple[int, int], keep: frozenset[str] | set[str]
) -> tuple[Config, list[str]]:
    """The config with input_size raised, where the model does not accept the stored images' own size (8x8
    digits, for a network that pools them to nothing), to the smallest whole multiple of it that the model
    accepts: a nearest upscale by a whole factor repeats each pixel, distorting none. Not where the user gave
    input_size (in `keep`) or with cfg.adapt False; unchanged where no multiple up to the model's own size
    serves (build_model then says so)."""
    if not cfg.adapt or cfg.input_size or "input_size" in keep:
        return cfg, []
    model = create_model(cfg.model, num_classes=2)
    if accepts(model, image_size):
        return cfg, []
    height, width = image_size
    low, high = 2, max(2, -(-default_input_size(cfg.model) // min(height, width)))
    if not accepts(model, (high * height, high * width)):
        return cfg, []
    while low < high:  # the smallest factor accepted (models accept every size above their smallest)
        middle = (low + high) // 2
        low, high = (low, middle) if accepts(model, (middle * height, middle * width)) else (middle + 1, high)
    size = high * height if height == width else f"{high * height}x{high * width}"
    line = (
        f"images of {height}x{width} are smaller than model {cfg.model!r} accepts: input_size 0 -> {size} "
        f"(each pixel repeated {high}x{high}); give --input-size to choose otherwise, or --no-adapt"
    )
    return cfg.replace(input_size=size), [line]


def init_source(cfg: Config) -> dict | None:
    """Check where the weights start before any data is read; the --init-from run's saved config (None
    without --init-from)."""
    if cfg.pretrained and cfg.init_from:
        raise ConfigError("config keys 'pretrained' and 'init_from' both set; start from one of them")
    if cfg.pretrained and cfg.pretrained != "hub" and not os.path.isfile(cfg.pretrained):
        raise ConfigError(f"{cfg.pretrained}: weights file not found (config key 'pretrained')")
    if not cfg.init_from:
        return None
    run = runs.load_run(cfg.init_from)
    source = run.get("config", {}).get("model")
    if source != cfg.model:
        raise ConfigError(
            f"{cfg.init_from}: a run of model {source!r}, not {cfg.model!r}; --init-from needs a run of "
            f"the same model (pass --model {source})"
        )
    return run


def init_from_run(model: torch.nn.Module, cfg: Config, run: dict, classes: list[str]) -> str:
    """Load the --init-from run's weights into `model`; its head too when the classes are the same.
    Returns a line saying what was done."""
    path = os.path.join(cfg.init_from, runs.WEIGHTS)
    same = run["data"]["classes"] == classes
    fresh = transfer_weights(model, read_state_dict(path), path, cfg.model, keep_head=same)
    return f"weights from {cfg.init_from}" + (
        "" if not fresh else f"; a new classifier head for {len(classes)} classes (the run's classes differ)"
    )


def whitening_sample(split, count: int = 5000, seed: int = 0):
    """Up to `count` training images drawn evenly at random from every class (the split is sorted by
    class: its first batch would be airplanes alone), for a data-dependent first layer."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(split))[:count])
    return split.take(pick)


@dataclass
class Prepared:
    """Everything a training run needs, built from a Config."""

    dataset: Dataset
    prep: Preprocessing
    model: torch.nn.Module
    train_loader: DeviceLoader
    val_loader: DeviceLoader | None
    device: torch.device
    bf16: bool
    cfg: Config  # the config, adapted to the dataset where that was asked
    notes: list[str]  # what was decided about the images and the recipe, to print and save
    at_stored_size: bool = False  # the model takes the stored images, its first conv upscaling them (upscale_in_model)


def prepare(cfg: Config, keep: frozenset[str] | set[str] | None = None) -> Prepared:
    """Data, model and loaders for `cfg`. With `keep` (the keys the user gave explicitly), the recipe
    is adapted to a small training set (adaptation.adapt_to_dataset); without, it is used as it is."""
    default_input_size(cfg.model)  # an unknown model name fails here, before any data is read
    source_run = init_source(cfg)  # and so do missing or mismatched starting weights
    tracking.loggers(cfg.log)  # and so does a logger whose package is missing
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    reset_peak_device_memory(device)  # this run's peak, from its data on
    dataset = load_data(cfg)
    notes: list[str] = []
    if keep is not None:
        cfg, notes = adapt_to_dataset(cfg, len(dataset.train), keep)
        cfg, imbalance = adapt_to_imbalance(cfg, class_counts(dataset.train.labels, len(dataset.classes)), keep)
        cfg, sized = adapt_input_size(cfg, dataset.image_shape[:2], keep)
        notes += imbalance + sized
    if cfg.batch_size > len(dataset.train):
        raise ConfigError(
            f"config key 'batch_size' ({cfg.batch_size}) is larger than the "
            f"{len(dataset.train)} training images; lower it"
        )
    ranks = distributed.world_size()
    if cfg.batch_size % ranks:  # each rank's loss is the mean over its share: equal shares
        raise ConfigError(
            f"config key 'batch_size' ({cfg.batch_size}) is not a multiple of the {ranks} processes "
            "(WORLD_SIZE); choose a multiple or another number of processes"
        )
    device = distributed.setup(device)  # under torchrun: join the process group; cuda:LOCAL_RANK on GPUs
    prep = preprocessing(cfg, dataset)
    check_early_size(cfg.early_size, prep.input_size)
    model = build_model(cfg, len(dataset.classes), prep.input_size, device)
    if source_run is not None:
        notes.append(init_from_run(model, cfg, source_run, dataset.classes))
    elif cfg.pretrained:
        notes.append(f"weights from {cfg.pretrained} ({cfg.model}); a new classifier head")
    if hasattr(model, "init_whitening") and not (cfg.pretrained or cfg.init_from):  # loaded weights keep theirs
        sample = make_loader(whitening_sample(dataset.train, seed=cfg.seed), cfg, prep, device, training=False)
        model.init_whitening(torch.cat([inputs for inputs, _ in sample]))
    at_stored_size = upscale_in_model(model, cfg, prep)
    train_loader = make_loader(dataset.train, cfg, prep, device, training=True, at_stored_size=at_stored_size)
    if train_loader.stream:
        notes.append(
            f"training images ({dataset.train.nbytes / 1e9:.2f} GB) stream from the host cache a batch at "
            + (
                "a time (they do not fit the device budget; --device-memory-gb)"
                if device.type != "cpu"
                else f"a time (more than {CPU_IN_PLACE_BYTES / 1e9:.0f} GB: memory holds batches, not the cache)"
            )
        )
    return Prepared(
        dataset,
        prep,
        model,
        train_loader,
        make_loader(dataset.val, cfg, prep, device, training=False, at_stored_size=at_stored_size)
        if dataset.val
        else None,
        device,
        use_bf16(cfg.precision, device),
        cfg,
        dataset.notes + notes,
        at_stored_size,
    )


@contextlib.contextmanager
def stop_on_signals():
    """While training: the first SIGINT/SIGTERM asks for a stop at the end of the current step (the
    state is checkpointed); a second SIGINT interrupts at once."""
    asked: list[str] = []

    def handler(signum, _frame):
        if asked and signum == signal.SIGINT:
            raise KeyboardInterrupt
        asked.append(signal.Signals(signum).name)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield lambda: asked[0] if asked else None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class TestAtEpochs(Callback):
    """Adds test_loss / test_accuracy to the history records of the given epochs, so that one training
    can stand for runs of several lengths (a sweep's shared epochs)."""

    def __init__(
        self, epochs: set[int], loader: DeviceLoader, classes: list[str], bf16: bool, tta: TestTimeAugmentation
    ):
        self.epochs, self.loader, self.classes, self.bf16, self.tta = epochs, loader, classes, bf16, tta

    def on_epoch_end(self, epoch: int, record: dict, model: torch.nn.Module) -> None:
        if epoch in self.epochs:
            test = evaluate(model, self.loader, self.classes, self.bf16, self.tta)
            record.update(test_loss=test["loss"], test_accuracy=test["accuracy"])


def _fit(
    cfg: Config,
    out: str,
    ready: Prepared,
    callbacks: tuple[Callback, ...],
    resume: dict | None,
    test_at_epochs: tuple[int, ...] = (),
    tracking_parent: str | None = None,
) -> dict:
    test_loader = (
        make_loader(
            ready.dataset.test, cfg, ready.prep, ready.device, training=False, at_stored_size=ready.at_stored_size
        )
        if ready.dataset.test is not None
        else None
    )
    # the tracker logs each epoch after its test figures are added and before a callback can stop the run
    tracker = tracking.Tracker(
        cfg, out, len(ready.train_loader) * cfg.batch_size, resume["epoch"] if resume else None, tracking_parent
    )
    callbacks = (tracker, *callbacks)
    if test_at_epochs and test_loader is not None:
        # the last epoch's test figures come from the final evaluation below, not from a second pass
        callbacks = (
            TestAtEpochs(
                set(test_at_epochs) - {cfg.epochs},
                test_loader,
                ready.dataset.classes,
                ready.bf16,
                TestTimeAugmentation.of(cfg),
            ),
            *callbacks,
        )

    with tracker:
        history, metrics = _train_and_save(cfg, out, ready, callbacks, resume, test_at_epochs, test_loader)
        tracker.finish(out, history, metrics, ready.dataset.classes)
    return metrics


def _train_and_save(
    cfg: Config,
    out: str,
    ready: Prepared,
    callbacks: tuple[Callback, ...],
    resume: dict | None,
    test_at_epochs: tuple[int, ...],
    test_loader: DeviceLoader | None,
) -> tuple[list[dict], dict]:
    main = distributed.is_main()

    def save(state: dict) -> None:
        if main:  # every rank takes the snapshot (its collectives), rank 0 writes it
            runs.save_checkpoint(out, state)

    agree = distributed.StopAgreement()
    with stop_on_signals() as stop_requested:
        # under torchrun, a signal to any rank stops every rank after the same step
        control = TrainControl(
            save_checkpoint=save,
            every_epochs=cfg.checkpoint_every,
            stop_requested=lambda: agree(stop_requested()),
            resume=resume,
        )
        try:
            history = train(
                ready.model,
                ready.train_loader,
                ready.val_loader,
                cfg,
                ready.dataset.classes,
                ready.bf16,
                callbacks,
                control,
            )
        except Interrupted as exc:
            how = "cnnlab" if distributed.world_size() == 1 else "torchrun <the same options> -m cnnlab"
            raise Interrupted(f"{exc}; resume with: {how} train --resume {out}") from None
    if not main:
        return history, {}
    metrics: dict = {
        "train_time_s": round(sum(r["time_s"] for r in history), 3),
        "eval_time_s": round(sum(r.get("eval_time_s", 0.0) for r in history), 3),
        "epochs_run": len(history),
    }
    metrics["calibration"] = calibrate(ready, cfg)
    if test_loader is not None:
        logits, labels = predict_batches(ready.model, test_loader, ready.bf16, TestTimeAugmentation.of(cfg))
        temperature = metrics["calibration"]["temperature"]
        metrics["test"] = metrics_from_logits(logits, labels, ready.dataset.classes, temperature)
        # per-image predictions, in test-split order: the report shows misclassified images from them
        metrics["test_predictions"] = logits.argmax(1).tolist()
        if history and history[-1]["epoch"] in test_at_epochs:
            history[-1].update(test_loss=metrics["test"]["loss"], test_accuracy=metrics["test"]["accuracy"])
    metrics["peak_memory_gb"] = round(peak_memory() / 1e9, 3)
    gpu = peak_device_memory(ready.device)
    if gpu is not None:  # the tensors' peak on the GPU, beside the process's on the host
        metrics["peak_gpu_memory_gb"] = round(gpu / 1e9, 3)
    if cfg.progress:
        print(f"peak memory (resident): {metrics['peak_memory_gb']:.2f} GB")
        if gpu is not None:
            print(f"peak GPU memory (tensors): {metrics['peak_gpu_memory_gb']:.2f} GB")
    runs.save_history(out, history)
    runs.save_weights(out, ready.model)
    plot_curves(history, out)
    runs.save_metrics(out, metrics)
    runs.mark_complete(out)
    return history, metrics


def calibrate(ready: Prepared, cfg: Config) -> dict:
    """metrics.json's calibration: the temperature fitted on the validation split's logits as evaluation
    computes them (TTA included), with the validation figures before and after; or why there is none."""
    if not cfg.calibrate or ready.val_loader is None:
        reason = "--no-calibrate" if not cfg.calibrate else "no validation split to fit a temperature on"
        if cfg.progress:
            print(f"probabilities uncalibrated: {reason}")
        return {"temperature": None, "reason": reason}
    logits, labels = predict_batches(ready.model, ready.val_loader, ready.bf16, TestTimeAugmentation.of(cfg))
    temperature = fit_temperature(logits, labels)
    before, after = figures(logits, labels), figures(logits, labels, temperature)
    if cfg.progress:
        print(
            f"calibration: temperature {temperature:.3f} fitted on validation ({len(labels)} images): "
            f"ECE {100 * before.ece:.2f}% -> {100 * after.ece:.2f}%"
        )
    return {
        "temperature": temperature,
        "fitted_on": "validation",
        "n": len(labels),
        "validation": {"raw": before.to_dict(), "calibrated": after.to_dict()},
    }


def quiet_unless_main(cfg: Config) -> Config:
    """The config a process runs: under torchrun, ranks > 0 show no progress and log to no tracker."""
    return cfg if distributed.is_main() else cfg.replace(progress=False, log="none")


def train_run(
    cfg: Config,
    out: str,
    callbacks: tuple[Callback, ...] = (),
    test_at_epochs: tuple[int, ...] = (),
    tracking_parent: str | None = None,
    keep: frozenset[str] | set[str] | None = None,
) -> dict:
    """Train `cfg` and save everything into the new run directory `out`; returns the test metrics.
    `test_at_epochs`: also evaluate the test split after these epochs (into the history);
    `tracking_parent`: the MLflow run (of a sweep) whose child this run's MLflow run is;
    `keep`: adapt the recipe to a small training set, except these keys (the command line passes the
    flags the user gave); None: the config exactly as it is (sweeps, the library's default)."""
    main = distributed.is_main()  # under torchrun, only rank 0 prints and writes the run directory
    if main:
        runs.check_new_run_dir(out)
    cfg = cfg.resolved()
    ready = prepare(quiet_unless_main(cfg), keep)
    if not main:
        with tf32_for(cfg.precision, ready.device):
            return _fit(ready.cfg, out, ready, callbacks, None, tuple(test_at_epochs), tracking_parent)
    cfg = ready.cfg
    if cfg.progress:
        print("\n".join(ready.dataset.named_found_lines() + ready.notes))
    runs.create_run_dir(out)
    data_info = {
        "source": ready.dataset.source,
        "classes": ready.dataset.classes,
        "found": dict(zip(ready.dataset.subsets(), ready.dataset.found_lines())),
        "sizes": {name: len(split) for name, split in ready.dataset.subsets().items()},
        "split": ready.dataset.split_rule,
        "preprocessing": ready.prep.to_dict(),
        "device": str(ready.device),
        "bf16": ready.bf16,
        "test_at_epochs": list(test_at_epochs),
        "notes": ready.notes,
        "world_size": distributed.world_size(),
        "skipped": {name: len(entries) for name, entries in ready.dataset.skipped.items()},
    }
    if ready.dataset.skipped:
        runs.save_skipped(out, ready.dataset.skipped)
    with tf32_for(cfg.precision, ready.device):  # in the run's environment, as its config.json records it
        runs.save_config(out, cfg.to_dict(), data_info)
        return _fit(cfg, out, ready, callbacks, None, tuple(test_at_epochs), tracking_parent)


def resume_run(run_dir: str, callbacks: tuple[Callback, ...] = (), device: str | None = None) -> dict:
    """Continue an interrupted run from its checkpoint; it ends as the uninterrupted run would. Under
    torchrun every rank resumes from the same checkpoint. `device`: where to go on (a sweep worker's),
    instead of the saved config's."""
    if not os.path.isdir(run_dir):
        raise CnnlabError(f"{run_dir}: no such run directory")
    if runs.is_complete(run_dir):
        raise CnnlabError(f"{run_dir}: the run is already complete; nothing to resume")
    saved = runs.read_json(os.path.join(run_dir, runs.CONFIG))
    try:
        cfg = saved_config(saved["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise CnnlabError(f"{os.path.join(run_dir, runs.CONFIG)}: not a usable run config ({exc})") from None
    if device:
        cfg = cfg.replace(device=device)
    cfg = quiet_unless_main(cfg)
    state = runs.load_checkpoint(run_dir)
    ready = prepare(cfg)
    if ready.dataset.classes != saved["data"]["classes"]:
        raise CnnlabError(f"{cfg.data_path()}: its classes differ from the run's; cannot resume")
    if cfg.progress:
        print(f"resuming {run_dir} at epoch {state['epoch']}, step {state['step']}")
    try:
        with tf32_for(cfg.precision, ready.device):
            return _fit(cfg, run_dir, ready, callbacks, state, tuple(saved["data"].get("test_at_epochs", ())))
    except CheckpointMismatch:
        raise CnnlabError(
            f"{os.path.join(run_dir, runs.CHECKPOINT)}: does not match model {cfg.model!r}; start the run again"
        ) from None


def load_trained(run_dir: str, device: torch.device | None = None) -> tuple[torch.nn.Module, Config, dict]:
    """(model with its weights, config, saved run) of a finished run."""
    run = runs.load_run(run_dir)
    try:
        cfg = saved_config(run["config"])
    except ConfigError as exc:
        raise CnnlabError(f"{os.path.join(run_dir, runs.CONFIG)}: {exc}") from None
    device = device or resolve_device(cfg.device)
    model = create_model(cfg.model, num_classes=len(run["data"]["classes"]))
    runs.load_weights(run_dir, model)
    return model.to(device, memory_format=torch.channels_last).eval(), cfg, run


def evaluate_run(
    run_dir: str, data: str | None = None, exclude: set[str] | None = None, tta_share: float | str | None = None
) -> dict:
    """Test metrics of a finished run on its dataset's test split (or on `data`'s). `exclude`: paths under the
    dataset's folder (test/CLASS/FILE) of test images to leave out of a second set of figures,
    `without_excluded` (their count in it as `excluded`), e.g. those with a near-duplicate in training.
    `tta_share`: the share of each batch given the test-time views, in place of the run's own."""
    model, cfg, run = load_trained(run_dir)
    if data:
        cfg = cfg.replace(data=data)
    if tta_share is not None:
        cfg = cfg.replace(tta_share=tta_share)  # validated: refused by name outside (0, 1]
    cfg = cfg.replace(progress=False)
    set_threads(cfg.threads)
    prep = Preprocessing.from_dict(run["data"]["preprocessing"])
    dataset = load_data(cfg, image_size=prep.image_size)
    if dataset.classes != run["data"]["classes"]:
        raise CnnlabError(f"{cfg.data_path()}: its classes differ from the run's ({', '.join(run['data']['classes'])})")
    split, name = (dataset.test, "test") if dataset.test is not None else (dataset.val, "validation")
    if split is None:
        raise CnnlabError(
            f"{cfg.data_path()}: no test folder and no validation split to evaluate on; pass --data with a test/ folder"
        )
    device = next(model.parameters()).device
    loader = make_loader(split, cfg, prep, device, training=False)
    bf16 = use_bf16(cfg.precision, device)
    tta = TestTimeAugmentation.of(cfg)
    logits, labels = predict_batches(model, loader, bf16, tta)
    metrics = metrics_from_logits(logits, labels, dataset.classes, runs.temperature(run))
    metrics["split"], metrics["tta"], metrics["tta_share"] = name, tta.flip, tta.share
    if exclude is not None:
        kept = torch.tensor([f"{name}/{file}" not in exclude for file in split.files])
        metrics["without_excluded"] = {
            **metrics_from_logits(logits[kept], labels[kept], dataset.classes, runs.temperature(run)),
            "excluded": int((~kept).sum()),
        }
    return metrics


__all__ = [
    "Prepared",
    "build_model",
    "evaluate_run",
    "load_data",
    "load_trained",
    "make_loader",
    "prepare",
    "preprocessing",
    "resume_run",
    "train_run",
]
