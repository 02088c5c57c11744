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
running sums, the progress bar's figures and a device-side record of the first non-finite loss are read
back together every `read_every_steps` steps, at a stop and at each epoch's end (`host_values`); a
non-finite loss then ends the run naming the epoch and step where it first appeared.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .config import Config
from .data.loader import DeviceLoader
from .device import autocast
from .errors import CheckpointMismatch, CnnlabError, Interrupted, TrainingError
from .evaluate import evaluate
from .optim import build_optimizer, build_scheduler, own_steps

__all__ = ["Callback", "CheckpointMismatch", "Interrupted", "StopTraining", "TrainControl", "TrainingError", "train"]


class Callback:
    """Hooks called by `train`; raise StopTraining from one to end the run early."""

    def on_epoch_end(self, epoch: int, record: dict, model: nn.Module) -> None:
        pass


class StopTraining(Exception):
    pass


@dataclass
class TrainControl:
    save_checkpoint: Callable[[dict], None] | None = None
    every_epochs: int = 1
    stop_requested: Callable[[], str | None] = field(default=lambda: None)  # the reason, when asked to stop
    resume: dict | None = None
    # steps between reads of the device (progress bar, non-finite check): each read stalls a GPU's queue, and
    # at ~5 ms a GPU step, 50 steps (a quarter of a second) is still a live progress bar
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


def train(model: nn.Module, train_loader: DeviceLoader, val_loader: DeviceLoader | None, cfg: Config,
          classes: list[str], bf16: bool = False, callbacks: Sequence[Callback] = (),
          control: TrainControl | None = None) -> list[dict]:
    """Train for cfg.epochs; after each epoch, validate. Returns the per-epoch history
    (loss and accuracy are running means over the epoch's batches, as Keras reports them)."""
    control = control or TrainControl()
    device = train_loader.device
    if device.type == "cuda":  # the fastest convolution algorithms for the batch's fixed shape, timed once
        torch.backends.cudnn.benchmark = True
    net = distributed.wrap(model, device, cfg.sync_bn)  # `model` itself in one process
    if cfg.compile:  # the training forward and backward only; evaluation runs `model` as it is
        net = torch.compile(net)
    optimizer = build_optimizer(model, cfg)
    steps = len(train_loader)
    if steps == 0:
        raise CnnlabError(f"config key 'batch_size' ({cfg.batch_size}) is larger than the "
                          f"{len(train_loader.labels)} training images; lower it")
    scheduler = build_scheduler(optimizer, cfg, steps)
    # one process only: a DDP model's set of parameters that get gradients must not change
    pending = [] if distributed.active() else finished_groups(optimizer, steps)
    stopped: list[nn.Parameter] = []
    history: list[dict] = []
    first_epoch, first_step, carried = 1, 0, None
    if control.resume is not None:
        state = control.resume
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointMismatch(f"the checkpoint does not match {type(model).__name__}") from exc
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history, first_epoch, first_step = list(state["history"]), state["epoch"], state["step"]
        carried = state["sums"]
    if distributed.active():
        saved = (control.resume or {}).get("rank_rng") or []
        if len(saved) == distributed.world_size():  # each rank's own stream, where it stopped
            torch.set_rng_state(saved[distributed.rank()]["cpu"])
            if device.type == "cuda" and saved[distributed.rank()]["cuda"] is not None:
                torch.cuda.set_rng_state(saved[distributed.rank()]["cuda"], device)
        elif distributed.rank() > 0:  # a stream of its own (rank 0 keeps the one-process stream)
            torch.manual_seed((cfg.seed * 1_000_003 + distributed.rank()) % 2**63)

    def snapshot(epoch: int, step: int, sums: dict) -> dict:
        loss_sum, correct, seen = distributed.sum_over_ranks(sums["loss_sum"], sums["correct"], sums["seen"])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                 "epoch": epoch, "step": step, "sums": {**sums, "loss_sum": loss_sum, "correct": correct, "seen": seen},
                 "history": history}
        if distributed.active():
            state["rank_rng"] = distributed.gather({
                "cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None})
        return state

    for epoch in range(first_epoch, cfg.epochs + 1):
        model.train()
        train_loader.set_epoch(epoch)
        start_step = first_step if epoch == first_epoch else 0
        if carried is not None and epoch == first_epoch:
            loss_sum, correct = carried["loss_sum"].to(device), carried["correct"].to(device)
            seen, before_s = carried["seen"], carried["time_s"]
            if not distributed.is_main():  # the sums of the steps before are all ranks', carried by rank 0
                loss_sum, correct, seen = torch.zeros_like(loss_sum), torch.zeros_like(correct), 0
        else:
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            seen, before_s = 0, 0.0
        first_bad = torch.zeros((), device=device, dtype=torch.int64)  # the epoch's first step of non-finite
        bad_loss = torch.zeros((), device=device)  # loss (0: none yet) and that loss

        def read() -> tuple[float, int]:
            """Wait for the device: the running sums; a non-finite loss since the last read ends the run."""
            loss_value, correct_value, bad_step, bad_value = host_values(loss_sum, correct, first_bad, bad_loss)
            if bad_step:
                bar.close()
                raise TrainingError(f"non-finite loss ({bad_value}) at epoch {epoch}, step {int(bad_step)}; "
                                    "lower lr or use --precision fp32")
            return loss_value, int(correct_value)

        start = time.perf_counter()
        bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                   disable=not cfg.progress, dynamic_ncols=True)
        for step, (inputs, labels) in enumerate(train_loader.batches(start_step), start_step + 1):
            while pending and scheduler.last_epoch >= pending[0][0]:  # host integers: no device wait
                for param in pending.pop(0)[1]:
                    if param.requires_grad:
                        param.requires_grad_(False)
                        stopped.append(param)
            with autocast(device, bf16):
                logits = net(inputs)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
            newly_bad = torch.isfinite(loss).logical_not_().logical_and_(first_bad == 0)  # on the device
            first_bad = torch.where(newly_bad, step, first_bad)
            bad_loss = torch.where(newly_bad, loss.detach(), bad_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            bar.update(1)
            if step % control.read_every_steps == 0 and step < steps:  # the epoch's end is read below
                loss_value, correct_value = read()
                if cfg.progress:
                    bar.set_postfix(loss=f"{loss_value / seen:.4f}", accuracy=f"{correct_value / seen:.4f}")
            reason = control.stop_requested()
            if reason and step < steps:
                loss_value, correct_value = read()  # never a checkpoint of weights gone non-finite
                bar.close()
                sums = {"loss_sum": torch.tensor(loss_value, dtype=loss_sum.dtype),
                        "correct": torch.tensor(correct_value), "seen": seen,
                        "time_s": before_s + time.perf_counter() - start}
                if control.save_checkpoint is None:
                    raise Interrupted(f"{reason} at epoch {epoch}, step {step}; no checkpoint was kept")
                control.save_checkpoint(snapshot(epoch, step, sums))
                raise Interrupted(f"{reason} at epoch {epoch}, step {step}; checkpoint saved")
        loss_value, correct_value = read()  # waits for the epoch's last step: its training time ends here
        bar.close()
        train_s = before_s + time.perf_counter() - start
        loss_total, correct_total, seen = distributed.sum_over_ranks(  # the global batches'
            torch.tensor(loss_value, dtype=torch.float64), correct_value, seen)
        distributed.sync_buffers(model)  # every rank evaluates rank 0's model
        record = {"epoch": epoch, "loss": float(loss_total) / seen, "accuracy": correct_total / seen,
                  "val_loss": None, "val_accuracy": None, "lr": optimizer.param_groups[0]["lr"],
                  "time_s": round(train_s, 3)}
        if val_loader is not None:
            start = time.perf_counter()
            val = evaluate(model, val_loader, classes, bf16, cfg.tta, cfg.tta_translate)  # as the test split is
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            record["eval_time_s"] = round(time.perf_counter() - start, 3)
        history.append(record)
        if cfg.progress:
            parts = [f"{k} {record[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                     if record[k] is not None]
            tqdm.write(f"epoch {epoch}/{cfg.epochs}: " + " - ".join(parts) + f" - {train_s:.1f}s")
        stop = False
        try:
            for callback in callbacks:
                callback.on_epoch_end(epoch, record, model)
        except StopTraining:
            stop = True
        reason = control.stop_requested()
        boundary = {"loss_sum": torch.zeros(()), "correct": torch.zeros((), dtype=torch.int64), "seen": 0,
                    "time_s": 0.0}
        if control.save_checkpoint is not None and epoch < cfg.epochs and not stop and (
                reason or (control.every_epochs and epoch % control.every_epochs == 0)):
            control.save_checkpoint(snapshot(epoch + 1, 0, boundary))
        if reason and epoch < cfg.epochs and not stop:
            raise Interrupted(f"{reason} after epoch {epoch}; checkpoint saved"
                              if control.save_checkpoint else f"{reason} after epoch {epoch}")
        if stop:
            break
    for param in stopped:  # the model is handed back as it came
        param.requires_grad_(True)
    return history
