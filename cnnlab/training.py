"""train(model, loaders, cfg, callbacks) -> history, one record per epoch.

Checkpoints (Keras's BackupAndRestore, Lightning's last.ckpt): `TrainControl.save_checkpoint` receives
the whole training state (weights, optimizer, schedule, RNG, position in the epoch, running sums,
history) after every `every_epochs` epochs and when a stop is requested; `TrainControl.resume` takes
such a state back, and the resumed run then ends exactly where an uninterrupted one would (on CPU).

Under torchrun (several processes) the model trains inside DistributedDataParallel: each rank computes the
mean loss of its equal share of every global batch (the loader's shard) and DDP averages the gradients,
which is the gradient of the global batch's mean loss. The epoch's sums are added over the ranks, every
rank validates the whole split with rank 0's buffers, and a checkpoint holds the global sums and each
rank's random state (dropout draws differ between ranks, as the images do).

The loop never waits for the device within a step (on a GPU the host runs ahead, queueing steps): the
running sums, the progress bar's figures and a device-side record of the first non-finite loss (`Meter`)
are read back together every `read_every_steps` steps, at a stop and at each epoch's end (`host_values`);
a non-finite loss then ends the run naming the epoch and step where it first appeared.

A callback that defines `on_step_end` is called after every training step (before a stop is looked for);
the loop calls none when no callback defines it. The tests' kill points (tests/hooks) are such callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm  # tqdm.write: a line printed above the bar

from . import distributed
from .config import Config
from .data.loader import DeviceLoader, balanced_class_weights, class_counts
from .device import autocast
from .errors import CheckpointMismatch, CnnlabError, Interrupted, TrainingError
from .evaluation import TestTimeAugmentation, metrics_from_logits, predict_batches
from .optim import build_optimizer, build_scheduler, own_steps
from .progress import progress_bar

__all__ = [
    "Callback",
    "CheckpointMismatch",
    "Interrupted",
    "StopTraining",
    "TrainControl",
    "TrainingError",
    "TrainingLoss",
    "train",
]

# the validation figures of an epoch's record, as val_<name> (top5_accuracy: with more than 5 classes); loss is
# training's (TrainingLoss, like with like in the curves), nll the plain cross-entropy (metrics' loss); ece and
# brier the raw probabilities' calibration (cnnlab/calibration.py)
VAL_FIGURES = ("loss", "nll", "accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy", "ece", "brier")


class Callback:
    """Hooks called by `train`; raise StopTraining from one to end the run early. `on_step_end` (epoch, step:
    the steps done in the epoch) is called only on callbacks that define it: the loop pays nothing otherwise."""

    def on_epoch_end(self, epoch: int, record: dict, model: nn.Module) -> None:
        pass

    def on_step_end(self, epoch: int, step: int) -> None:
        pass


def step_callbacks(callbacks: Sequence[Callback]) -> tuple[Callback, ...]:
    """The callbacks whose class defines its own `on_step_end`."""
    return tuple(
        c for c in callbacks if getattr(type(c), "on_step_end", Callback.on_step_end) is not Callback.on_step_end
    )


class StopTraining(Exception):
    pass


@dataclass
class TrainControl:
    save_checkpoint: Callable[[dict], None] | None = None
    every_epochs: int = 1
    stop_requested: Callable[[], str | None] = field(default=lambda: None)  # the reason, when asked to stop
    resume: dict | None = None
    # steps between reads of the device (progress bar, non-finite check): each read stalls a GPU's queue;
    # at a few ms a GPU step, 50 steps is still a live progress bar
    read_every_steps: int = 50


def host_values(*values: torch.Tensor) -> list[float]:
    """The numbers in one-element tensors, on the host, in one copy: the one place the training loop
    waits for the device."""
    return torch.stack([v.detach().reshape(()).double() for v in values]).tolist()


def finished_groups(optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> list[tuple[int, list[nn.Parameter]]]:
    """(the step from which the lr is 0, the parameters) of each param group with epochs of its own (the
    whitening bias): an update at lr 0 changes nothing, so from then on their gradients are not computed
    (nor, for the whitening bias, the first convolution's input gradient), as airbench detaches it."""
    ends = [(own_steps(group, steps_per_epoch), group["params"]) for group in optimizer.param_groups]
    return sorted(((end, list(params)) for end, params in ends if end is not None), key=lambda item: item[0])


@dataclass
class Meter:
    """One epoch's running sums (loss x images, correct predictions) on the device, so that adding to them
    never waits for it, and the first step of a non-finite loss (0: none yet) with that loss."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    first_bad: torch.Tensor
    bad_loss: torch.Tensor
    seen: int = 0
    before_s: float = 0.0  # the epoch's training time before the checkpoint it resumed from
    totals: tuple[float, int] | None = None  # the sums on the host, read at the epoch's end

    @classmethod
    def start(cls, device: torch.device, carried: dict | None = None) -> Meter:
        """Zero sums, or a checkpoint's (`carried`): the sums of all ranks' steps before, kept by rank 0."""
        flags = dict(
            first_bad=torch.zeros((), device=device, dtype=torch.int64), bad_loss=torch.zeros((), device=device)
        )
        if carried is None:
            return cls(torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.int64), **flags)
        meter = cls(
            carried["loss_sum"].to(device),
            carried["correct"].to(device),
            **flags,
            seen=carried["seen"],
            before_s=carried["time_s"],
        )
        if not distributed.is_main():
            meter.loss_sum, meter.correct, meter.seen = (
                torch.zeros_like(meter.loss_sum),
                torch.zeros_like(meter.correct),
                0,
            )
        return meter

    def watch(self, step: int, loss: torch.Tensor) -> None:
        """Notes `step` as the first non-finite one if it is, on the device."""
        newly_bad = torch.isfinite(loss).logical_not_().logical_and_(self.first_bad == 0)
        self.first_bad = torch.where(newly_bad, step, self.first_bad)
        self.bad_loss = torch.where(newly_bad, loss.detach(), self.bad_loss)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()
        self.seen += len(labels)

    def read(self, epoch: int) -> tuple[float, int]:
        """Waits for the device: the sums; a non-finite loss since the last read ends the run."""
        loss_value, correct_value, bad_step, bad_value = host_values(
            self.loss_sum, self.correct, self.first_bad, self.bad_loss
        )
        if bad_step:
            raise TrainingError(
                f"non-finite loss ({bad_value}) at epoch {epoch}, step {int(bad_step)}; "
                "lower lr or use --precision fp32"
            )
        return loss_value, int(correct_value)

    def checkpoint_form(self, epoch: int, elapsed_s: float) -> dict:
        """The sums as a checkpoint keeps them (on the host), read first: never a checkpoint of weights
        gone non-finite."""
        loss_value, correct_value = self.read(epoch)
        return {
            "loss_sum": torch.tensor(loss_value, dtype=self.loss_sum.dtype),
            "correct": torch.tensor(correct_value),
            "seen": self.seen,
            "time_s": self.before_s + elapsed_s,
        }

    @staticmethod
    def epoch_start_form() -> dict:
        """The checkpoint form of an epoch not yet begun."""
        return {"loss_sum": torch.zeros(()), "correct": torch.zeros((), dtype=torch.int64), "seen": 0, "time_s": 0.0}


class Freezer:
    """Stops computing the gradients of param groups whose lr has reached 0 for good (`finished_groups`);
    in one process, not compiled: a DDP model's set of parameters that get gradients must not change, and
    a compiled step (which guards on requires_grad) would compile again. There lr 0 alone keeps them still."""

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, compiled: bool = False):
        frozen_never = distributed.active() or compiled
        self.pending = [] if frozen_never else finished_groups(optimizer, steps_per_epoch)
        self.stopped: list[nn.Parameter] = []

    def update(self, steps_done: int) -> None:
        while self.pending and steps_done >= self.pending[0][0]:  # host integers: no device wait
            for param in self.pending.pop(0)[1]:
                if param.requires_grad:
                    param.requires_grad_(False)
                    self.stopped.append(param)

    def release(self) -> None:
        """The model handed back as it came."""
        for param in self.stopped:
            param.requires_grad_(True)


def train(
    model: nn.Module,
    train_loader: DeviceLoader,
    val_loader: DeviceLoader | None,
    cfg: Config,
    classes: list[str],
    bf16: bool = False,
    callbacks: Sequence[Callback] = (),
    control: TrainControl | None = None,
) -> list[dict]:
    """Train for cfg.epochs; after each epoch, validate. Returns the per-epoch history (loss and accuracy are
    running means over the epoch's batches, as Keras reports them; val_loss is the same loss, named by
    loss_name, on the validation split; val_nll its plain cross-entropy)."""
    run = Training.build(model, train_loader, val_loader, cfg, classes, bf16, control or TrainControl())
    run.step_callbacks = step_callbacks(callbacks)
    first_epoch, first_step, carried = run.restore()
    for epoch in range(first_epoch, cfg.epochs + 1):
        resumed = epoch == first_epoch  # a checkpoint's position and sums are its epoch's alone
        meter = Meter.start(run.device, carried if resumed else None)
        train_s = run.train_epoch(epoch, first_step if resumed else 0, meter)
        record = run.end_epoch(epoch, meter, train_s)
        stop = run.call_back(callbacks, epoch, record)
        run.checkpoint_or_stop(epoch, stop)
        if stop:
            break
    run.freezer.release()
    return run.history


def loss_weights(cfg: Config, loader: DeviceLoader, n_classes: int) -> torch.Tensor | None:
    """The loss's class weights as cfg.class_weight says, from the whole training split's labels (which
    every rank holds: the same weights on every rank); None for none."""
    if cfg.class_weight == "none":
        return None
    weights = balanced_class_weights(class_counts(loader.labels, n_classes))
    return torch.tensor(weights, dtype=torch.float32, device=loader.device)


@dataclass(frozen=True, eq=False)
class TrainingLoss:
    """The loss training minimises (and lr-find sweeps, and validation reports): cross-entropy with label
    smoothing, each image's loss times its class's weight (`class_weight`, None: all 1), averaged over the
    images, as Keras's class_weight. Not PyTorch's `weight=`, which also weights every class's smoothing term
    by that class's weight (pulling majority-class images towards the rare classes). The mean over images
    makes the mean of the ranks' losses under torchrun the global batch's."""

    label_smoothing: float = 0.0
    class_weight: torch.Tensor | None = None

    @classmethod
    def of(cls, cfg: Config, loader: DeviceLoader, n_classes: int) -> TrainingLoss:
        """The config's loss, its class weights from `loader`'s (the training split's) labels."""
        return cls(cfg.label_smoothing, loss_weights(cfg, loader, n_classes))

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.class_weight is None:
            return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        per_image = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing, reduction="none")
        return (per_image * self.class_weight.to(per_image.device)[labels]).mean()

    @property
    def name(self) -> str:
        """The loss in words, for the history and the plots: "cross-entropy, label smoothing 0.2, class-weighted"."""
        parts = ["cross-entropy"]
        if self.label_smoothing:
            parts.append(f"label smoothing {self.label_smoothing:g}")
        if self.class_weight is not None:
            parts.append("class-weighted")
        return ", ".join(parts)


@dataclass
class Training:
    """What the epochs share: the model and `net`, what trains it (DDP, compiled, or the model itself), the
    optimizer and schedule, the loaders, the config, the control, and the history so far."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    freezer: Freezer
    loaders: tuple[DeviceLoader, DeviceLoader | None]  # training, validation
    classes: list[str]
    bf16: bool
    cfg: Config
    control: TrainControl
    step_callbacks: tuple[Callback, ...] = ()  # those that define on_step_end
    history: list[dict] = field(default_factory=list)
    criterion: TrainingLoss = field(default_factory=TrainingLoss)

    @property
    def device(self) -> torch.device:
        return self.loaders[0].device

    @property
    def steps(self) -> int:
        return len(self.loaders[0])

    @classmethod
    def build(
        cls,
        model: nn.Module,
        train_loader: DeviceLoader,
        val_loader: DeviceLoader | None,
        cfg: Config,
        classes: list[str],
        bf16: bool,
        control: TrainControl,
    ) -> Training:
        net = distributed.wrap(model, train_loader.device, cfg.sync_bn)  # `model` itself in one process
        if cfg.compile:  # the training forward and backward only; evaluation runs `model` as it is
            net = torch.compile(net)
        optimizer = build_optimizer(model, cfg)
        steps = len(train_loader)
        if steps == 0:
            raise CnnlabError(
                f"config key 'batch_size' ({cfg.batch_size}) is larger than the "
                f"{len(train_loader.labels)} training images; lower it"
            )
        scheduler = build_scheduler(optimizer, cfg, steps)
        return cls(
            model,
            net,
            optimizer,
            scheduler,
            Freezer(optimizer, steps, compiled=cfg.compile),
            (train_loader, val_loader),
            classes,
            bf16,
            cfg,
            control,
            criterion=TrainingLoss.of(cfg, train_loader, len(classes)),
        )

    def restore(self) -> tuple[int, int, dict | None]:
        """Takes back the state of `control.resume`, if any, and gives each rank its random stream;
        returns (the first epoch, the steps of it already done, the running sums at that point)."""
        state, device = self.control.resume, self.device
        first_epoch, first_step, carried = 1, 0, None
        if state is not None:
            try:
                self.model.load_state_dict(state["model"])
            except RuntimeError as exc:
                raise CheckpointMismatch(f"the checkpoint does not match {type(self.model).__name__}") from exc
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            self.history, first_epoch, first_step = list(state["history"]), state["epoch"], state["step"]
            carried = state["sums"]
        if distributed.active():
            saved = (state or {}).get("rank_rng") or []
            rank = distributed.rank()
            if len(saved) == distributed.world_size():  # each rank's own stream, where it stopped
                torch.set_rng_state(saved[rank]["cpu"])
                if device.type == "cuda" and saved[rank]["cuda"] is not None:
                    torch.cuda.set_rng_state(saved[rank]["cuda"], device)
            elif rank > 0:  # a stream of its own (rank 0 keeps the one-process stream)
                torch.manual_seed((self.cfg.seed * 1_000_003 + rank) % 2**63)
        return first_epoch, first_step, carried

    def train_epoch(self, epoch: int, start_step: int, meter: Meter) -> float:
        """Trains the epoch's steps from `start_step` on; returns its training time (s), which ends when the
        device has done its last step. A stop asked mid-epoch checkpoints and raises Interrupted."""
        loader, cfg, steps = self.loaders[0], self.cfg, self.steps
        self.model.train()
        loader.set_epoch(epoch)
        start = time.perf_counter()
        with progress_bar(
            cfg.progress,
            total=steps,
            initial=start_step,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="step",
            leave=False,
            dynamic_ncols=True,
        ) as bar:
            for step, (inputs, labels) in enumerate(loader.batches(start_step), start_step + 1):
                self.train_step(step, inputs, labels, meter)
                bar.update(1)
                if step % self.control.read_every_steps == 0 and step < steps:  # the epoch's end is read below
                    loss_value, correct_value = meter.read(epoch)
                    if cfg.progress:
                        bar.set_postfix(
                            loss=f"{loss_value / meter.seen:.4f}", accuracy=f"{correct_value / meter.seen:.4f}"
                        )
                for callback in self.step_callbacks:
                    callback.on_step_end(epoch, step)
                reason = self.control.stop_requested()
                if reason and step < steps:
                    self.stop_mid_epoch(epoch, step, meter, reason, time.perf_counter() - start)
            meter.totals = meter.read(epoch)  # waits for the epoch's last step (and checks it)
        return meter.before_s + time.perf_counter() - start

    def train_step(self, step: int, inputs: torch.Tensor, labels: torch.Tensor, meter: Meter) -> None:
        self.freezer.update(self.scheduler.last_epoch)
        with autocast(self.device, self.bf16):
            logits = self.net(inputs)
        loss = self.criterion(logits.float(), labels)
        meter.watch(step, loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        meter.add(loss, logits, labels)

    def stop_mid_epoch(self, epoch: int, step: int, meter: Meter, reason: str, elapsed_s: float) -> None:
        sums = meter.checkpoint_form(epoch, elapsed_s)
        if self.control.save_checkpoint is None:
            raise Interrupted(f"{reason} at epoch {epoch}, step {step}; no checkpoint was kept")
        self.control.save_checkpoint(self.snapshot(epoch, step, sums))
        raise Interrupted(f"{reason} at epoch {epoch}, step {step}; checkpoint saved")

    def end_epoch(self, epoch: int, meter: Meter, train_s: float) -> dict:
        """The epoch's record (its sums over all ranks, validated with rank 0's model), added to the history."""
        loss_value, correct_value = meter.totals
        loss_total, correct_total, seen = distributed.sum_over_ranks(  # the global batches'
            torch.tensor(loss_value, dtype=torch.float64), correct_value, meter.seen
        )
        distributed.sync_buffers(self.model)  # every rank evaluates rank 0's model
        record = {
            "epoch": epoch,
            "loss": float(loss_total) / seen,
            "accuracy": correct_total / seen,
            "val_loss": None,
            "val_accuracy": None,
            "lr": self.optimizer.param_groups[0]["lr"],
            "time_s": round(train_s, 3),
        }
        cfg, val_loader = self.cfg, self.loaders[1]
        if val_loader is not None:
            start = time.perf_counter()
            logits, labels = predict_batches(self.model, val_loader, self.bf16, TestTimeAugmentation.of(cfg))  # as test
            val = metrics_from_logits(logits, labels, self.classes)
            val.update(nll=val["loss"], loss=self.criterion(logits, labels).item())
            record.update({f"val_{key}": val[key] for key in VAL_FIGURES if key in val})
            record["eval_time_s"] = round(time.perf_counter() - start, 3)
        record["loss_name"] = self.criterion.name  # loss and val_loss alike
        self.history.append(record)
        if cfg.progress:
            parts = [
                f"{k} {record[k]:.4f}"
                for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                if record[k] is not None
            ]
            tqdm.write(f"epoch {epoch}/{cfg.epochs}: " + " - ".join(parts) + f" - {train_s:.1f}s")
        return record

    def call_back(self, callbacks: Sequence[Callback], epoch: int, record: dict) -> bool:
        """Hands the record to each callback; True when one asked to stop (StopTraining)."""
        try:
            for callback in callbacks:
                callback.on_epoch_end(epoch, record, self.model)
        except StopTraining:
            return True
        return False

    def checkpoint_or_stop(self, epoch: int, stop: bool) -> None:
        """At an epoch's end: a checkpoint every `every_epochs` epochs or when a stop is asked (Interrupted).
        Every rank asks (a collective under torchrun), even when a callback has ended the run."""
        control, last = self.control, epoch == self.cfg.epochs
        reason = control.stop_requested()
        if (
            control.save_checkpoint is not None
            and not last
            and not stop
            and (reason or (control.every_epochs and epoch % control.every_epochs == 0))
        ):
            control.save_checkpoint(self.snapshot(epoch + 1, 0, Meter.epoch_start_form()))
        if reason and not last and not stop:
            raise Interrupted(
                f"{reason} after epoch {epoch}; checkpoint saved"
                if control.save_checkpoint
                else f"{reason} after epoch {epoch}"
            )

    def snapshot(self, epoch: int, step: int, sums: dict) -> dict:
        """The whole training state at `step` steps into `epoch`, with the global running sums (a
        collective under torchrun: every rank takes it, rank 0 writes it)."""
        device = self.device
        loss_sum, correct, seen = distributed.sum_over_ranks(sums["loss_sum"], sums["correct"], sums["seen"])
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "epoch": epoch,
            "step": step,
            "history": self.history,
            "sums": {**sums, "loss_sum": loss_sum, "correct": correct, "seen": seen},
        }
        if distributed.active():
            state["rank_rng"] = distributed.gather(
                {
                    "cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                }
            )
        return state
