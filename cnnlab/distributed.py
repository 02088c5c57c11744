"""One training over several processes: `torchrun --nproc-per-node N -m cnnlab train ...` (PyTorch's
launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; --nnodes/--rdzv-endpoint spread it over
machines) and DistributedDataParallel. Who this process is, the process group (NCCL on GPUs, gloo on
CPUs), the model's wrapper, and the few collectives the training needs.

Without WORLD_SIZE (or with 1) nothing here does anything: no process group is set up, the model is not
wrapped, every function returns its input."""

from __future__ import annotations

import functools
import os
import signal

import torch
import torch.distributed as dist
import torch.nn as nn

_control = None  # a gloo group for flags and small objects: CPU tensors, no GPU sync (beside NCCL)


def world_size() -> int:
    return max(1, int(os.environ.get("WORLD_SIZE") or 1))


def rank() -> int:
    return int(os.environ.get("RANK") or 0) if world_size() > 1 else 0


def is_main() -> bool:
    """Rank 0: the one process that prints and writes the run directory."""
    return rank() == 0


def active() -> bool:
    return world_size() > 1 and dist.is_available() and dist.is_initialized()


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group (once per process) and return this rank's device: on CUDA,
    cuda:LOCAL_RANK (one GPU per process, whatever index the config names)."""
    global _control
    if world_size() == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK") or 0))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        _control = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
    return device


def shutdown(together: bool = False) -> None:
    """Leave the process group. `together` (every rank finished its work): first wait for the others, so
    that no rank tears its connections down while a peer still uses them (gloo then aborts a rank)."""
    global _control
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier(group=_control)
        dist.destroy_process_group()
    _control = None


class _SumOverRanks(torch.autograd.Function):
    """all_reduce (sum) that autograd differentiates: each rank's share of the sum gets the sum of every rank's
    gradient of it, so the gradient flows through the other ranks' images as it would in one process."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total, group=dist.group.WORLD)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=dist.group.WORLD)
        return total


class GlobalBatchStatistics:
    """Put in front of a BatchNorm class: in training, the global batch's statistics from per-channel sums over
    this rank's share, summed over the ranks, into the mean, then the biased variance. The running variance
    moves by the rule of the layer it joins: the unbiased batch variance (PyTorch's), or the biased one where
    the layer says `biased_moving_var` (Keras's, models/alexnet.py). Otherwise (eval mode, one process), the
    layer's own forward. Works on any device (gloo or NCCL) and never waits for the GPU: the sums stay on the
    device (torch's SyncBatchNorm reads them on the host in every layer's forward, a boolean-mask index)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(inputs)
        x = inputs.float()
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)  # no host-to-device copy
        total = _SumOverRanks.apply(torch.cat([x.sum(dims), count]))
        count, mean = total[-1], total[:-1] / total[-1]
        centred = x - mean.view(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            self._move_statistics(mean.detach(), var.detach(), count.detach())
        outputs = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            outputs = outputs * self.weight.view(shape) + self.bias.view(shape)
        return outputs.to(inputs.dtype)

    @torch.no_grad()
    def _move_statistics(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        # the count and a cumulative average's momentum stay tensors: no device-to-host copy on a GPU
        momentum = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        batch_var = var if getattr(self, "biased_moving_var", False) else var * (count / (count - 1))
        self.running_mean.mul_(1 - momentum).add_(mean * momentum)
        self.running_var.mul_(1 - momentum).add_(batch_var * momentum)


@functools.cache
def _synchronised(cls: type) -> type:
    """`cls` with GlobalBatchStatistics in front: the same parameters, buffers and settings, and the same class
    for isinstance, so its moving-statistics rule and its state dict are kept."""
    if issubclass(cls, GlobalBatchStatistics):
        return cls
    return type(f"Global{cls.__name__}", (GlobalBatchStatistics, cls), {"__module__": __name__})


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` with every BatchNorm layer computing over the global batch, in place (same parameters and
    buffers, so its state dict is unchanged): GlobalBatchStatistics in front of each layer's class, on every
    device (`device` is kept for callers; torch's SyncBatchNorm waits for the GPU in every layer's forward)."""
    for module in model.modules():
        if isinstance(module, _BATCHNORMS):
            module.__class__ = _synchronised(type(module))
    return model


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """`model` inside DistributedDataParallel (gradients averaged over the ranks in backward); with
    `sync_bn`, its BatchNorm layers first made to compute over the global batch (sync_batchnorm). In one
    process: `model` itself."""
    if not active():
        return model
    if sync_bn:
        model = sync_batchnorm(model, device)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


AGREE_EVERY = 10  # calls (a training asks once a step and once at an epoch's end) between agreements


class StopAgreement:
    """Called with this rank's stop reason (a signal's name, or None) where the training asks whether to stop:
    the stop asked of any rank, on every rank, so that all stop after the same step. One MAX all-reduce of one
    number over the gloo control group (on GPUs no synchronisation of the NCCL training), every `every`-th
    call only, not every step: every rank makes the same calls in the same order, so all agree on the same
    call, and a stop asked is taken at most `every` calls later. In one process: the reason itself, at once."""

    def __init__(self, every: int = AGREE_EVERY):
        self.every, self.calls = every, 0

    def __call__(self, reason: str | None) -> str | None:
        if not active():
            return reason
        self.calls += 1
        if self.calls % self.every:
            return None
        code = torch.tensor([signal.Signals[reason].value if reason else 0])
        dist.all_reduce(code, op=dist.ReduceOp.MAX, group=_control)
        return signal.Signals(int(code)).name if int(code) else None


def sum_over_ranks(*values: torch.Tensor | int) -> list:
    """Each value (a tensor of one number, or an int) summed over the ranks, its type kept."""
    if not active():
        return list(values)
    packed = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(packed, group=_control)  # on the CPU: a few numbers, once an epoch or checkpoint
    return [
        packed[i].to(v.device, v.dtype) if isinstance(v, torch.Tensor) else int(packed[i]) for i, v in enumerate(values)
    ]


def sync_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so that all evaluate one model."""
    if active():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def gather(obj) -> list:
    """Every rank's `obj`, in rank order (a list of one in a single process)."""
    if not active():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj, group=_control)
    return out
