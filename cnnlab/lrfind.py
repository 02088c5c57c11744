"""Learning-rate finder (Smith 2015, "Cyclical Learning Rates"; fastai's `Learner.lr_find`).

A mock training whose learning rate grows exponentially from `start_lr` to `end_lr`, one batch a step,
recording the loss of each step. The losses are smoothed by an exponential moving average with bias
correction (fastai's AvgSmoothLoss, beta 0.98); the sweep stops early once the smoothed loss exceeds
4x its minimum so far, or the loss is not finite (fastai's divergence rule). A learning rate is then
suggested by fastai's "valley" rule (`valley_index`). The model comes back as it went in: its weights,
buffers, gradients, train/eval mode and the random number generators are saved before and put back after.

Every param group's lr is multiplied by the same factor, so groups with their own lr (a backbone at a
fraction of the head's, Muon's conv filters at muon_lr) keep their ratio; the lr the sweep reports is
the first group's (the head's, i.e. the config's `lr`). Other hyperparameters (momentum, weight decay)
stay as the optimiser was built.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed
from .config import Config
from .device import autocast
from .errors import CnnlabError, ConfigError
from .files import write_atomic
from .optim import build_optimizer
from .progress import progress_bar
from .training import TrainingLoss
from .version import __version__

__all__ = ["LrFindResult", "LrSweep", "find_lr", "lr_find_run", "plot_lr_find", "suggest_lr", "valley_index"]

PLOT, RESULT = "lr_find.png", "lr_find.json"


@dataclass(frozen=True)
class LrSweep:
    """The sweep: `steps` learning rates from `start_lr` to `end_lr` (both included), equally spaced on a
    log scale; `beta`: the smoothing of the loss; `stop_factor`: stop once the smoothed loss exceeds this
    many times its minimum (0 = never stop early)."""

    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100
    beta: float = 0.98
    stop_factor: float = 4.0

    def __post_init__(self) -> None:
        if not (self.start_lr > 0 and math.isfinite(self.end_lr) and self.end_lr > self.start_lr):
            raise ConfigError(
                f"lr-find: --start-lr ({self.start_lr}) must be positive and below --end-lr ({self.end_lr})"
            )
        if self.steps < 2:
            raise ConfigError(f"lr-find: --steps ({self.steps}) must be at least 2")
        if not 0 <= self.beta < 1:
            raise ConfigError(f"lr-find: beta ({self.beta}) must be in [0, 1)")

    def lr(self, step: int) -> float:
        """The learning rate of step `step` (0-based)."""
        return self.start_lr * (self.end_lr / self.start_lr) ** (step / (self.steps - 1))


@dataclass
class LrFindResult:
    """One sweep: per step its lr (the first param group's), raw and smoothed loss; the suggested lr, the
    index of its step and how it was chosen; why the sweep ended; `base_lrs`: each param group's lr as
    the optimizer was built, and `reference_lr` the first nonzero of them: at a step of lr x, every group
    trains at its base lr times x / reference_lr."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    suggestion_index: int | None
    rule: str
    stop_reason: str
    base_lrs: list[float] = field(default_factory=list)
    reference_lr: float = 0.0
    time_s: float = 0.0

    def to_dict(self) -> dict:
        """As JSON can hold it: a non-finite loss becomes None."""
        values = asdict(self)
        for key in ("losses", "smoothed"):
            values[key] = [v if math.isfinite(v) else None for v in values[key]]
        return values


def valley_index(losses: list[float]) -> int:
    """fastai's "valley" rule (ESRI's; fastai.callback.schedule.valley): the index of the suggested point.

    The valley is the longest strictly falling subsequence of the losses (found by dynamic programming;
    not necessarily contiguous): its length n and its last point `end` (the first such, on ties). Its start
    is taken as `end - n` (one before its first point when the valley is contiguous), and the suggestion
    lies floor(n/3) + floor(n/6) points after that start: about halfway down the valley in steps, i.e. near
    the geometric mean of its two ends' learning rates (fastai's docs say "roughly 2/3 through"; this is
    its arithmetic). Unlike fastai, an index before 0 is clamped to 0 (fastai's would wrap to the end)."""
    if not losses:
        raise ValueError("valley_index needs at least one loss")
    length = [1] * len(losses)  # length[i]: the longest strictly falling subsequence ending at i
    end = 0
    for i in range(1, len(losses)):
        length[i] = 1 + max((length[j] for j in range(i) if losses[j] > losses[i]), default=0)
        if length[i] > length[end]:
            end = i
    start = end - length[end]
    third = (end - start) / 3
    return max(0, start + int(third) + int(third / 2))


def suggest_lr(lrs: list[float], smoothed: list[float], planned_steps: int) -> tuple[int | None, str]:
    """(index of the suggested lr, the rule in words) from a sweep's smoothed losses. As fastai, the
    first planned_steps // 10 points (the loss still settling) and the last 5 (the rise that stopped the
    sweep) are left out, and so is everything from the first non-finite loss on; when that leaves fewer
    than 2 points, every finite point is used. None when no loss was finite."""
    finite = next((i for i, v in enumerate(smoothed) if not math.isfinite(v)), len(smoothed))
    lo, hi = planned_steps // 10, finite - 5
    if hi - lo < 2:
        lo, hi = 0, finite
    if hi <= lo:
        return None, "no suggestion: the loss was not finite from the first step (lower --start-lr)"
    index = lo + valley_index(smoothed[lo:hi])
    return index, (
        f"valley (fastai): the longest falling stretch of the smoothed loss over steps {lo}-{hi - 1}, "
        f"the suggestion about halfway down it (step {index} of {len(lrs)})"
    )


def _batches_forever(batches: Iterable) -> Iterator:
    """The batches again and again (epochs of a loader); ends when a pass yields none."""
    while True:
        count = 0
        for batch in batches:
            count += 1
            yield batch
        if not count:
            return


@dataclass
class _Saved:
    """What a sweep changes in the model and the process, to put back afterwards."""

    state: dict
    grads: list[torch.Tensor | None]
    modes: list[bool]
    cpu_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None

    @classmethod
    def take(cls, model: nn.Module) -> _Saved:
        return cls(
            {k: v.detach().clone() for k, v in model.state_dict().items()},
            [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()],
            [m.training for m in model.modules()],
            torch.get_rng_state(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        )

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)
        for p, grad in zip(model.parameters(), self.grads):
            p.grad = grad
        for m, mode in zip(model.modules(), self.modes):
            m.training = mode
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def find_lr(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    sweep: LrSweep = LrSweep(),
    bf16: bool = False,
    progress: bool = False,
) -> LrFindResult:
    """Sweep the learning rate of a fresh optimizer `make_optimizer(model)` over `batches` (iterated again
    when they run out, so a small training set gives several epochs), one (inputs, labels) batch a step,
    the model in training mode, `loss_fn(outputs, labels)` (outputs in fp32), under bf16 autocast with
    `bf16`. The model's weights, buffers, gradients, modes and the RNG states are as before afterwards,
    also when the sweep fails or is interrupted."""
    saved = _Saved.take(model)
    start = time.perf_counter()
    try:
        result = _sweep(model, batches, make_optimizer(model), loss_fn, sweep, bf16, progress)
    finally:
        saved.restore(model)
    result.time_s = round(time.perf_counter() - start, 3)
    return result


def _sweep(
    model: nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable,
    sweep: LrSweep,
    bf16: bool,
    progress: bool,
) -> LrFindResult:
    base = [group["lr"] for group in optimizer.param_groups]
    reference = next((lr for lr in base if lr > 0), 0.0)
    if not reference:
        raise CnnlabError("lr-find: every param group of the optimizer has lr 0; nothing would train")
    ratios = [lr / reference for lr in base]
    device = next(model.parameters()).device
    model.train()
    lrs, losses, smoothed = [], [], []
    average, best, reason = 0.0, math.inf, f"completed {sweep.steps} steps"
    bar = progress_bar(progress, total=sweep.steps, desc="lr-find", unit="step", leave=False, dynamic_ncols=True)
    try:
        for step, (inputs, labels) in enumerate(_batches_forever(batches)):
            if step == sweep.steps:
                break
            lr = sweep.lr(step)
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            with autocast(device, bf16):
                outputs = model(inputs)
            loss = loss_fn(outputs.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())  # each step's loss decides whether the sweep goes on
            average = sweep.beta * average + (1 - sweep.beta) * value
            smooth = average / (1 - sweep.beta ** (step + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            best = min(best, smooth)
            bar.update(1)
            bar.set_postfix(lr=f"{lr:.2e}", loss=f"{smooth:.4f}")
            if not math.isfinite(smooth):
                reason = f"stopped at step {step + 1}: the loss is not finite"
                break
            if sweep.stop_factor and smooth > sweep.stop_factor * best:
                reason = f"stopped at step {step + 1}: the smoothed loss exceeded {sweep.stop_factor:g}x its minimum"
                break
        else:
            if len(lrs) < sweep.steps:
                reason = f"the batches ran out after {len(lrs)} steps"
    finally:
        bar.close()
        optimizer.zero_grad(set_to_none=True)
    if not lrs:
        raise CnnlabError("lr-find: no training batches (the training set is empty)")
    index, rule = suggest_lr(lrs, smoothed, sweep.steps)
    return LrFindResult(
        lrs, losses, smoothed, None if index is None else lrs[index], index, rule, reason, base, reference
    )


def plot_lr_find(result: LrFindResult, path: str, marks: dict[str, float] | None = None) -> str:
    """The smoothed loss (and, faint, the raw one) against the lr on a log axis, the suggestion as a dot
    and each of `marks` (a label: an lr, e.g. the preset's) as a dashed vertical line; written whole or
    not at all."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [
        (lr, raw, smooth)
        for lr, raw, smooth in zip(result.lrs, result.losses, result.smoothed)
        if math.isfinite(raw) and math.isfinite(smooth)
    ]
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if points:
        lrs, raws, smooths = zip(*points)
        ax.plot(lrs, raws, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss")
        ax.plot(lrs, smooths, color="tab:blue", label="smoothed loss")
        low, high = min(min(raws), min(smooths)), max(smooths)
        margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
        ax.set_ylim(low - margin, high + margin)  # the raw loss's spikes above the smoothed curve may leave it
    if result.suggestion is not None:
        ax.plot(
            [result.suggestion],
            [result.smoothed[result.suggestion_index]],
            "o",
            color="tab:red",
            label=f"suggestion {result.suggestion:.3g} (valley)",
        )
    for (label, lr), color in zip((marks or {}).items(), ("tab:green", "tab:purple", "tab:orange")):
        ax.axvline(lr, color=color, linestyle="--", linewidth=1, label=f"{label} {lr:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (first param group)")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate finder")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    return path


@dataclass
class LrFindRun:
    """A config's sweep: the result, the config it ran (adapted to the dataset as `cnnlab train` would),
    what was decided about the data, the files written."""

    result: LrFindResult
    cfg: Config
    notes: list[str]
    files: list[str]

    def suggested(self) -> dict[str, float]:
        """The config values the suggestion stands for: lr and, with Muon, muon_lr, scaled alike."""
        if self.result.suggestion is None:
            return {}
        factor = self.result.suggestion / self.result.reference_lr
        values = {"lr": self.cfg.lr * factor}
        if self.cfg.optimizer == "muon":
            values["muon_lr"] = self.cfg.muon_lr * factor
        return values


def _epochs(loader) -> Iterator:
    """The training loader's epochs 1, 2, ... one after the other, each with its own order and augmentation."""
    epoch = 0
    while True:
        epoch += 1
        loader.set_epoch(epoch)
        count = 0
        for batch in loader.batches():
            count += 1
            yield batch
        if not count:
            return


def lr_find_run(
    cfg: Config, out: str, sweep: LrSweep = LrSweep(), keep: frozenset[str] | set[str] | None = None
) -> LrFindRun:
    """Sweep the learning rate of `cfg`'s model, optimizer, batch size, augmentation and loss on its training
    split, and write `out`/lr_find.png and `out`/lr_find.json. `keep`: as for pipeline.train_run (the keys
    the user gave; the recipe is adapted to a small training set except these); None: `cfg` as it is."""
    from .pipeline import prepare

    if distributed.world_size() > 1:
        raise CnnlabError("cnnlab lr-find runs in one process; run it without torchrun")
    ready = prepare(cfg.resolved(), keep)
    cfg = ready.cfg
    notes = ready.dataset.named_found_lines() + ready.notes
    if not sweep.start_lr <= cfg.lr <= sweep.end_lr:
        notes.append(
            f"note: the config's lr {cfg.lr:g} lies outside the sweep ({sweep.start_lr:g} to "
            f"{sweep.end_lr:g}); widen it with --start-lr / --end-lr to see the loss there"
        )
    if cfg.progress:
        print("\n".join(notes))
    loss_fn = TrainingLoss.of(cfg, ready.train_loader, len(ready.dataset.classes))  # training's, weights included
    result = find_lr(
        ready.model,
        _epochs(ready.train_loader),
        lambda model: build_optimizer(model, cfg),
        loss_fn,
        sweep,
        ready.bf16,
        cfg.progress,
    )
    os.makedirs(out, exist_ok=True)
    run = LrFindRun(result, cfg, notes, [])
    marks = {"config lr": cfg.lr} if sweep.start_lr <= cfg.lr <= sweep.end_lr else {}
    run.files.append(plot_lr_find(result, os.path.join(out, PLOT), marks))
    record = {
        **result.to_dict(),
        "suggested_config": run.suggested(),
        "loss": loss_fn.name,
        "sweep": asdict(sweep),
        "config": cfg.to_dict(),
        "device": str(ready.device),
        "bf16": ready.bf16,
        "notes": run.notes,
        "steps_per_epoch": len(ready.train_loader),
        "version": __version__,
    }
    path = os.path.join(out, RESULT)
    write_atomic(path, json.dumps(record, indent=1) + "\n")
    run.files.append(path)
    return run
