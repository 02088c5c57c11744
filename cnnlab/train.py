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
from .optim import build_optimizer, build_scheduler

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


def train(model: nn.Module, train_loader: DeviceLoader, val_loader: DeviceLoader | None, cfg: Config,
          classes: list[str], bf16: bool = False, callbacks: Sequence[Callback] = (),
          control: TrainControl | None = None) -> list[dict]:
    """Train for cfg.epochs; after each epoch, validate. Returns the per-epoch history
    (loss and accuracy are running means over the epoch's batches, as Keras reports them)."""
    control = control or TrainControl()
    net = distributed.wrap(model, train_loader.device, cfg.sync_bn)  # `model` itself in one process
    optimizer = build_optimizer(model, cfg)
    steps = len(train_loader)
    if steps == 0:
        raise CnnlabError(f"config key 'batch_size' ({cfg.batch_size}) is larger than the "
                          f"{len(train_loader.labels)} training images; lower it")
    scheduler = build_scheduler(optimizer, cfg, steps)
    device = train_loader.device
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
        start = time.perf_counter()
        bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                   disable=not cfg.progress, dynamic_ncols=True)
        for step, (inputs, labels) in enumerate(train_loader.batches(start_step), start_step + 1):
            with autocast(device, bf16):
                logits = net(inputs)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise TrainingError(f"non-finite loss ({loss.item()}) at epoch {epoch}, step {step}; "
                                    "lower lr or use --precision fp32")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            bar.update(1)
            if cfg.progress and (step % 10 == 0 or step == steps):
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", accuracy=f"{correct.item() / seen:.4f}")
            reason = control.stop_requested()
            if reason and step < steps:
                bar.close()
                sums = {"loss_sum": loss_sum.cpu(), "correct": correct.cpu(), "seen": seen,
                        "time_s": before_s + time.perf_counter() - start}
                if control.save_checkpoint is None:
                    raise Interrupted(f"{reason} at epoch {epoch}, step {step}; no checkpoint was kept")
                control.save_checkpoint(snapshot(epoch, step, sums))
                raise Interrupted(f"{reason} at epoch {epoch}, step {step}; checkpoint saved")
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = before_s + time.perf_counter() - start
        loss_sum, correct, seen = distributed.sum_over_ranks(loss_sum, correct, seen)  # the global batches'
        distributed.sync_buffers(model)  # every rank evaluates rank 0's model
        record = {"epoch": epoch, "loss": loss_sum.item() / seen, "accuracy": correct.item() / seen,
                  "val_loss": None, "val_accuracy": None, "lr": optimizer.param_groups[0]["lr"],
                  "time_s": round(train_s, 3)}
        if val_loader is not None:
            start = time.perf_counter()
            val = evaluate(model, val_loader, classes, bf16, cfg.tta)
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
    return history
