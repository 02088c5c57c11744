"""CpuConv2d (NNPACK forward, default backward on AVX2-only CPUs) computes the same convolution."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab.models import cpu_conv
from cnnlab.models.cpu_conv import CpuConv2d

pytestmark = pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this PyTorch build has no NNPACK")


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kernel, stride, padding, bias", [(5, 1, 2, True), (3, 1, 1, False), (3, 2, 0, True)])
def test_the_nnpack_forward_gives_the_convolution_and_its_gradients(
    monkeypatch, kernel, stride, padding, bias, channels_last
):
    monkeypatch.setattr(cpu_conv, "_avx2_cpu", lambda: True)  # the path of an AVX2-only CPU, on any CPU
    torch.manual_seed(0)
    conv = CpuConv2d(6, 8, kernel, stride=stride, padding=padding, bias=bias)
    inputs = torch.randn(4, 6, 11, 11)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    inputs.requires_grad_()
    out = conv(inputs)
    assert type(out.grad_fn).__name__.startswith("_NnpackForwardConv")  # the path was taken
    grad = torch.randn(out.shape)
    (out * grad).sum().backward()
    # the float64 convolution is the reference; both float32 results are within rounding of it
    ref_in = inputs.detach().double().requires_grad_()
    ref_w = conv.weight.detach().double().requires_grad_()
    ref_b = conv.bias.detach().double().requires_grad_() if bias else None
    ref = F.conv2d(ref_in, ref_w, ref_b, stride, padding)
    (ref * grad.double()).sum().backward()
    pairs = [(out, ref), (inputs.grad, ref_in.grad), (conv.weight.grad, ref_w.grad)]
    if bias:
        pairs.append((conv.bias.grad, ref_b.grad))
    for got, want in pairs:
        assert got.shape == want.shape
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_the_plain_convolution_runs_where_nnpack_does_not_pay(monkeypatch):
    conv = CpuConv2d(3, 4, 3, padding=1)
    inputs = torch.randn(2, 3, 8, 8, requires_grad=True)
    monkeypatch.setattr(cpu_conv, "_avx2_cpu", lambda: False)  # an AVX-512/AMX CPU
    assert not type(conv(inputs).grad_fn).__name__.startswith("_Nnpack")
    monkeypatch.setattr(cpu_conv, "_avx2_cpu", lambda: True)
    assert type(conv(inputs).grad_fn).__name__.startswith("_Nnpack")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 stays with autocast's own convolution
        assert conv(inputs).dtype == torch.bfloat16
    assert not type(conv.double()(inputs.double()).grad_fn).__name__.startswith("_Nnpack")
