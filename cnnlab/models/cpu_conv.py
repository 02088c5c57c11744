"""A convolution whose forward pass runs on NNPACK where that is faster than PyTorch's default (oneDNN).

On an AVX2-only CPU, NNPACK's forward convolutions of the study's AlexNet (FFT/Winograd/GEMM kernels tuned
for AVX2) are faster than oneDNN's, while oneDNN's backward pass is the faster one (see docs/benchmarks.md;
`benchmarks/seed_throughput.py` measures it). PyTorch only ships NNPACK's forward, so this layer computes
the forward with NNPACK and the gradients with the default backward (`aten.convolution_backward`, oneDNN).
Both are the same convolution, within float32 rounding of a float64 reference (tests/test_cpu_conv.py).
Elsewhere (AVX-512/AMX CPUs, GPUs, bf16 autocast, other dtypes) it is a plain nn.Conv2d; state dicts are
the same.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import Function


@functools.cache
def _avx2_cpu() -> bool:
    """An x86 CPU whose widest vector unit PyTorch uses is AVX2 (no AVX-512): where NNPACK paid."""
    return torch.backends.cpu.get_cpu_capability() == "AVX2" and torch.backends.nnpack.is_available()


def nnpack_forward_pays(inputs: torch.Tensor) -> bool:
    return (
        inputs.device.type == "cpu"
        and inputs.dtype == torch.float32
        and _avx2_cpu()
        and not torch.is_autocast_enabled("cpu")
    )


def nnpack_conv2d(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding
) -> torch.Tensor:
    """NNPACK's forward convolution, through torch's private op; F.conv2d, the same convolution, where this
    torch has no such op or takes other arguments for it (so no upper bound on torch is needed for it)."""
    op = getattr(torch, "_nnpack_spatial_convolution", None)
    if op is not None:
        try:
            return op(inputs, weight, bias, padding, stride)
        except TypeError:  # the op's signature changed in this torch
            pass
    return F.conv2d(inputs, weight, bias, stride, padding)


class _NnpackForwardConv(Function):
    @staticmethod
    def forward(ctx, inputs, weight, bias, stride, padding):
        inputs, weight = inputs.contiguous(), weight.contiguous()  # NNPACK takes NCHW
        ctx.save_for_backward(inputs, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return nnpack_conv2d(inputs, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        inputs, weight = ctx.saved_tensors
        grad_in, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad.contiguous(),
            inputs,
            weight,
            [weight.shape[0]] if ctx.has_bias else None,
            list(ctx.stride),
            list(ctx.padding),
            [1, 1],
            False,
            [0, 0],
            1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]],
        )
        return grad_in, grad_weight, grad_bias, None, None


class CpuConv2d(nn.Conv2d):
    """nn.Conv2d whose fp32 forward on an AVX2-only CPU runs on NNPACK (see the module's text)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if (
            nnpack_forward_pays(inputs)
            and self.groups == 1
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
        ):
            return _NnpackForwardConv.apply(inputs, self.weight, self.bias, self.stride, self.padding)
        return super().forward(inputs)
