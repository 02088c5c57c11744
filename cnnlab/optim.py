"""The optimizer and the learning-rate schedule a config asks for.

sgd, adam, adamw: one torch optimizer over every trainable parameter, the classifier head at lr and the
rest at lr * backbone_lr_scale. muon: the speed records' split (Jordan 2024, airbench94_muon):
torch.optim.Muon for the conv filters, each seen as a matrix out x (in*kh*kw), and Nesterov SGD for every
other parameter, wrapped as one optimizer so that one schedule and one checkpoint hold both; its
Newton-Schulz iteration in fp32 where the training is (torch's runs it in bf16, emulated on most CPUs).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from .config import Config
from .device import use_bf16
from .errors import ConfigError
from .models import head_parameter_names

__all__ = ["KerasAdam", "Muon", "MuonWithSGD", "build_optimizer", "build_scheduler", "lr_factor", "param_groups"]


def param_groups(
    model: nn.Module,
    lr: float,
    backbone_lr_scale: float,
    exclude: set[int] = frozenset(),
    whiten_bias_epochs: float = 0.0,
) -> list[dict]:
    """One group at `lr`; with backbone_lr_scale != 1, the classifier head at `lr` (first, so a history's
    lr is the head's) and every other parameter at lr * backbone_lr_scale. Parameters whose id is in
    `exclude` are left out (another optimizer's). With `whiten_bias_epochs`, the whitening layer's bias
    (a model's `whiten.bias`) gets a group of its own that trains for that many epochs (`lr_epochs`, read
    by build_scheduler)."""
    whiten = getattr(getattr(model, "whiten", None), "bias", None) if whiten_bias_epochs else None
    exclude = set(exclude) | ({id(whiten)} if whiten is not None else set())
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad and id(p) not in exclude]
    if backbone_lr_scale == 1.0:
        groups = [{"params": [p for _, p in params], "lr": lr}]
    else:
        head = set(head_parameter_names(model))
        groups = [
            {"params": [p for name, p in params if name in head], "lr": lr},
            {"params": [p for name, p in params if name not in head], "lr": lr * backbone_lr_scale},
        ]
    if whiten is not None and whiten.requires_grad:
        groups.append({"params": [whiten], "lr": lr * backbone_lr_scale, "lr_epochs": whiten_bias_epochs})
    return [group for group in groups if group["params"]]


class Muon(torch.optim.Muon if hasattr(torch.optim, "Muon") else torch.optim.Optimizer):
    """torch.optim.Muon with its Newton-Schulz iteration in `ns_dtype`. torch's runs it in bf16, which a CPU
    without bf16 units emulates, many times slower than fp32 (see docs/benchmarks.md). With ns_dtype bf16
    the step is torch's own; otherwise the same update (momentum, Nesterov, decoupled decay, the lr
    adjusted to the shape) with the iteration in ns_dtype."""

    def __init__(self, params, *, ns_dtype: torch.dtype = torch.bfloat16, **kwargs):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @staticmethod
    def _orthogonalise(
        matrix: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype
    ) -> torch.Tensor:
        a, b, c = coefficients
        x = matrix.to(dtype)
        wide = x.size(0) <= x.size(1)
        x = x if wide else x.T
        x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
        for _ in range(steps):
            gram = x @ x.T
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x if wide else x.T

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        if self.ns_dtype == torch.bfloat16:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            if group["adjust_lr_fn"] not in (None, "original"):
                raise ValueError(f"adjust_lr_fn {group['adjust_lr_fn']!r}: only the original adjustment here")
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buffer = state["momentum_buffer"].lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = self._orthogonalise(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"], self.ns_dtype
                )
                p.mul_(1 - lr * decay)
                p.add_(update.to(p.dtype), alpha=-lr * math.sqrt(max(1.0, p.size(0) / p.size(1))))
        return loss


def _column_order(tensor: torch.Tensor) -> list[int]:
    """The dims after the first, outermost first in memory: a filter permuted so is contiguous, its 2-D
    view then shares its storage (out x (in*kh*kw) for NCHW filters, out x (kh*kw*in) for channels_last)."""
    return sorted(range(1, tensor.ndim), key=lambda dim: -tensor.stride(dim))


def _as_matrix(tensor: torch.Tensor, order: list[int]) -> torch.Tensor:
    return tensor.permute(0, *order).reshape(len(tensor), -1)


class MuonWithSGD(torch.optim.Optimizer):
    """torch.optim.Muon for 4-D conv filters and torch.optim.SGD for the other parameters, as one optimizer.

    Muon takes 2-D parameters only: it is given a matrix view of each filter (sharing its storage, so its
    updates land in the filter) and, at each step, the filter's gradient seen the same way. As airbench
    does, each filter's norm is reset to sqrt(out_channels) before its update: a conv followed by
    BatchNorm computes the same whatever its filter's scale, and a fixed norm keeps Muon's step size
    relative to the weights constant (there is no weight decay on the filters). `param_groups` is SGD's
    groups then Muon's (the same dicts), so a learning-rate scheduler moves both.
    """

    def __init__(
        self,
        filters: list[nn.Parameter],
        sgd_groups: list[dict],
        *,
        muon_lr: float,
        muon_momentum: float,
        momentum: float,
        nesterov: bool,
        ns_steps: int = 3,
        ns_dtype: torch.dtype = torch.bfloat16,
    ):
        self.filters = list(filters)
        self.orders = [_column_order(p) for p in self.filters]
        self.matrices = [_as_matrix(p.detach(), order) for p, order in zip(self.filters, self.orders)]
        if any(m.data_ptr() != p.data_ptr() for m, p in zip(self.matrices, self.filters)):
            raise ValueError("a conv filter is not dense in memory; Muon cannot update it in place")
        self.sgd = torch.optim.SGD(
            sgd_groups, lr=sgd_groups[0]["lr"] if sgd_groups else 0.0, momentum=momentum, nesterov=nesterov
        )
        self.muon = Muon(
            self.matrices,
            lr=muon_lr,
            momentum=muon_momentum,
            nesterov=nesterov,
            weight_decay=0.0,
            ns_steps=ns_steps,
            ns_dtype=ns_dtype,
        )
        super().__init__(self.filters + [p for g in self.sgd.param_groups for p in g["params"]], {})
        self._share_groups()

    def _share_groups(self) -> None:
        self.param_groups = self.sgd.param_groups + self.muon.param_groups

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for p, matrix, order in zip(self.filters, self.matrices, self.orders):
            if p.grad is None:
                matrix.grad = None
                continue
            matrix.grad = _as_matrix(p.grad, order)  # a view when the gradient has the filter's layout
            p.mul_(math.sqrt(len(p)) / p.norm())
        self.sgd.step()
        self.muon.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none)
        for p, matrix in zip(self.filters, self.matrices):
            matrix.grad = None
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def state_dict(self) -> dict:
        return {"sgd": self.sgd.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.sgd.load_state_dict(state_dict["sgd"])
        self.muon.load_state_dict(state_dict["muon"])
        self._share_groups()  # loading replaced the group dicts


class KerasAdam(torch.optim.Adam):
    """torch's Adam with Keras's placement of epsilon: Keras adds it to sqrt(v) before the bias correction,
    which is torch's update with eps / sqrt(1 - beta2^t) at step t (30x eps at step 1, eps in the limit)."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            group.setdefault("keras_eps", group["eps"])
            group.setdefault("keras_step", 0)  # a host count, saved with the groups: no device read per step

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        for group in self.param_groups:
            group["keras_step"] += 1
            group["eps"] = group["keras_eps"] / math.sqrt(1.0 - group["betas"][1] ** group["keras_step"])
        return super().step(closure)


def _muon(model: nn.Module, cfg: Config) -> MuonWithSGD:
    if not hasattr(torch.optim, "Muon"):
        raise ConfigError(
            f"optimizer 'muon' needs torch.optim.Muon (torch >= 2.9); this is torch {torch.__version__}: "
            "upgrade torch or choose another optimizer"
        )
    filters = [p for p in model.parameters() if p.requires_grad and p.ndim == 4]
    if not filters:
        raise ConfigError(
            f"optimizer 'muon': model {type(model).__name__} has no trainable conv filters for Muon; "
            "choose another optimizer"
        )
    groups = param_groups(model, cfg.lr, cfg.backbone_lr_scale, {id(p) for p in filters}, cfg.whiten_bias_epochs)
    for group in groups:  # airbench's decay: lr x decay the same in every group (none where the lr is 0)
        group["weight_decay"] = cfg.weight_decay / group["lr"] if group["lr"] else 0.0
    # the Newton-Schulz iteration in the training's precision (bf16 only where the hardware has it), as the peer
    bf16 = use_bf16(cfg.precision, filters[0].device)
    return MuonWithSGD(
        filters,
        groups,
        muon_lr=cfg.muon_lr,
        muon_momentum=cfg.muon_momentum,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        ns_dtype=torch.bfloat16 if bf16 else torch.float32,
    )


def _kernels(model: nn.Module) -> dict:
    """Fused kernels on CUDA (one launch for every parameter); on the CPU the multi-tensor (foreach)
    ones, which give the same numbers as the per-parameter loop there (the fused CPU ones do not)."""
    return {"fused": True} if any(p.is_cuda for p in model.parameters()) else {"foreach": True}


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    if cfg.optimizer == "muon":
        return _muon(model, cfg)
    params = param_groups(model, cfg.lr, cfg.backbone_lr_scale, whiten_bias_epochs=cfg.whiten_bias_epochs)
    if cfg.optimizer in ("adam", "adamw"):
        kind = torch.optim.AdamW if cfg.optimizer == "adamw" else KerasAdam
        return kind(
            params,
            lr=cfg.lr,
            betas=(cfg.momentum, 0.999),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
            **_kernels(model),
        )
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        **_kernels(model),
    )


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at `step`: 1 for constant; for onecycle a linear rise over the
    warm-up, then a linear fall to 0 at the last step (the triangular schedule of the speed records);
    for cosine the same rise, then half a cosine from 1 to 0 (SGDR without restarts, as timm fine-tunes)."""
    if schedule == "constant":
        return 1.0
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))))
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def own_steps(group: dict, steps_per_epoch: int) -> int | None:
    """The steps a param group with `lr_epochs` of its own trains (its lr is 0 from then on); None for the rest."""
    return max(1, int(round(group["lr_epochs"] * steps_per_epoch))) if group.get("lr_epochs") else None


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Config, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """cfg.schedule over cfg.epochs for every group; a group with `lr_epochs` (param_groups) follows the
    same schedule compressed into its own epochs, then stays at 0."""
    total, warmup = cfg.epochs * steps_per_epoch, int(round(cfg.warmup_epochs * steps_per_epoch))

    def factor(group: dict) -> Callable[[int], float]:
        if not group.get("lr_epochs"):
            return lambda step: lr_factor(step, total, warmup, cfg.schedule)
        own = own_steps(group, steps_per_epoch)
        return lambda step: lr_factor(step, own, min(warmup, own), cfg.schedule) if step < own else 0.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(group) for group in optimizer.param_groups])
