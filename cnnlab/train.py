"""train(model, loaders, cfg, callbacks) -> history, one record per epoch."""
from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .config import Config
from .data.loader import DeviceLoader
from .device import autocast
from .errors import CnnlabError
from .evaluate import evaluate


class TrainingError(CnnlabError):
    """Training cannot go on (e.g. a non-finite loss)."""


class Callback:
    """Hooks called by `train`; raise StopTraining from one to end the run early."""

    def on_epoch_end(self, epoch: int, record: dict, model: nn.Module) -> None:
        pass


class StopTraining(Exception):
    pass


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), eps=cfg.adam_eps,
                                weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at `step`: 1 for constant; for onecycle a linear rise over the
    warm-up, then a linear fall to 0 at the last step (the triangular schedule of the speed records)."""
    if schedule == "constant":
        return 1.0
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def train(model: nn.Module, train_loader: DeviceLoader, val_loader: DeviceLoader | None, cfg: Config,
          classes: list[str], bf16: bool = False, callbacks: Sequence[Callback] = ()) -> list[dict]:
    """Train for cfg.epochs; after each epoch, validate. Returns the per-epoch history
    (loss and accuracy are running means over the epoch's batches, as Keras reports them)."""
    optimizer = build_optimizer(model, cfg)
    steps = len(train_loader)
    if steps == 0:
        raise CnnlabError(f"config key 'batch_size' ({cfg.batch_size}) is larger than the "
                          f"{len(train_loader.labels)} training images; lower it")
    total, warmup = cfg.epochs * steps, int(round(cfg.warmup_epochs * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, cfg.schedule))
    device = train_loader.device
    history: list[dict] = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        start = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", leave=False,
                   disable=not cfg.progress, dynamic_ncols=True)
        for step, (inputs, labels) in enumerate(bar, 1):
            with autocast(device, bf16):
                logits = model(inputs)
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
            if cfg.progress and (step % 10 == 0 or step == steps):
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", accuracy=f"{correct.item() / seen:.4f}")
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - start
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
        try:
            for callback in callbacks:
                callback.on_epoch_end(epoch, record, model)
        except StopTraining:
            break
    return history
