"""One training over several processes: `torchrun --nproc-per-node N -m cnnlab train ...` (PyTorch's
launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; --nnodes/--rdzv-endpoint spread it over
machines) and DistributedDataParallel. Who this process is, the process group (NCCL on GPUs, gloo on
CPUs), the model's wrapper, and the few collectives the training needs.

Without WORLD_SIZE (or with 1) nothing here does anything: no process group is set up, the model is not
wrapped, every function returns its input."""
from __future__ import annotations

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


def shutdown() -> None:
    global _control
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control = None


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm on CPUs, where torch's needs a GPU (and DDP refuses it): the global batch's statistics
    from per-channel sums over this rank's share, all-reduced (differentiably, so the gradient flows
    through the other ranks' images as in one process) into the mean, then the biased variance.
    In eval mode, plain BatchNorm on the running statistics."""

    def _check_input_dim(self, inputs: torch.Tensor) -> None:
        if inputs.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {inputs.dim()}D input)")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(inputs)
        from torch.distributed.nn.functional import all_reduce

        x = inputs.float()
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        local = torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])])
        total = all_reduce(local, group=dist.group.WORLD)
        count, mean = total[-1], total[:-1] / total[-1]
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims), group=dist.group.WORLD) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * (count / (count - 1)), alpha=momentum)
        outputs = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            outputs = outputs * self.weight.view(shape) + self.bias.view(shape)
        return outputs.to(inputs.dtype)


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """`model` inside DistributedDataParallel (gradients averaged over the ranks in backward); with
    `sync_bn`, its BatchNorm layers first turned into SyncBatchNorm, in place (same parameters and
    buffers, so its state dict is unchanged). In one process: `model` itself."""
    if not active():
        return model
    if sync_bn and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif sync_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.__class__ = CpuSyncBatchNorm  # same parameters, buffers and settings; another forward
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def agree_stop(reason: str | None) -> str | None:
    """The stop asked of any rank (a signal's name), on every rank, so that all stop after the same step:
    one MAX all-reduce of one number over gloo: 0.56 ms a call measured between 2 processes on a 2-core
    CPU (a seed-preset step there takes ~4 s; a GPU step of NCCL training is not synchronised by it)."""
    if not active():
        return reason
    code = torch.tensor([signal.Signals[reason].value if reason else 0])
    dist.all_reduce(code, op=dist.ReduceOp.MAX, group=_control)
    return signal.Signals(int(code)).name if int(code) else None


def sum_over_ranks(*values: torch.Tensor | int) -> list:
    """Each value (a tensor of one number, or an int) summed over the ranks, its type kept."""
    if not active():
        return list(values)
    packed = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(packed, group=_control)  # on the CPU: a few numbers, once an epoch or checkpoint
    return [packed[i].to(v.device, v.dtype) if isinstance(v, torch.Tensor) else int(packed[i])
            for i, v in enumerate(values)]


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
