"""Private torch functions are reached through one guarded function each; without them the public path gives
the same results. And which CPUs count as computing bf16 natively, read from the CPU's flags."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab import device as device_module
from cnnlab.models import cpu_conv
from cnnlab.models.cpu_conv import CpuConv2d


def test_without_torchs_nnpack_op_the_conv_is_f_conv2d(monkeypatch):
    monkeypatch.setattr(cpu_conv, "_avx2_cpu", lambda: True)  # the NNPACK path of an AVX2-only CPU, on any CPU
    monkeypatch.delattr(torch, "_nnpack_spatial_convolution", raising=False)  # a torch without the private op
    torch.manual_seed(0)
    conv = CpuConv2d(6, 8, 5, stride=1, padding=2)
    inputs = torch.randn(4, 6, 11, 11, requires_grad=True)
    out = conv(inputs)
    grad = torch.randn(out.shape)
    (out * grad).sum().backward()
    ref_in = inputs.detach().clone().requires_grad_()
    ref_w = conv.weight.detach().clone().requires_grad_()
    ref = F.conv2d(ref_in, ref_w, conv.bias.detach(), 1, 2)
    (ref * grad).sum().backward()
    assert torch.equal(out, ref)  # the public convolution itself
    torch.testing.assert_close(inputs.grad, ref_in.grad)
    torch.testing.assert_close(conv.weight.grad, ref_w.grad)


def test_an_nnpack_op_whose_signature_changed_falls_back_to_f_conv2d(monkeypatch):
    """A later torch may keep the private op's name and change its arguments: the public convolution then."""

    def changed(*args, **kwargs):
        raise TypeError("_nnpack_spatial_convolution() takes 3 positional arguments but 5 were given")

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", changed, raising=False)
    torch.manual_seed(0)
    inputs, weight, bias = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3), torch.randn(4)
    out = cpu_conv.nnpack_conv2d(inputs, weight, bias, (1, 1), (1, 1))
    assert torch.equal(out, F.conv2d(inputs, weight, bias, (1, 1), (1, 1)))


# /proc/cpuinfo lines (flags abridged): what each CPU computes bf16 with
CPUS = {
    "skylake_avx512": ("flags\t\t: fpu sse2 avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni\n", False),  # emulated
    "sapphire_rapids": ("flags\t\t: fpu avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile\n", True),
    "epyc_zen2": ("flags\t\t: fpu sse2 avx avx2 fma sha_ni\n", False),
    "epyc_zen4": ("flags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n", True),
    "graviton3": ("processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16 svebf16\n", True),
    "graviton2": ("processor\t: 0\nFeatures\t: fp asimd aes pmull sha1 sha2 crc32 atomics\n", False),
}


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_cpu_bf16_is_native_bf16_from_the_cpu_flags(tmp_path, monkeypatch, cpu):
    text, native = CPUS[cpu]
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: x\n" + text)
    monkeypatch.setattr(device_module, "CPUINFO", str(tmp_path / "cpuinfo"))
    monkeypatch.delenv(device_module.CPU_BF16_ENV, raising=False)  # .ci/run also runs with it set
    assert device_module.cpu_has_bf16() is native
    assert device_module.use_bf16("auto", torch.device("cpu")) is native
    # the switch that lets the suite run as on the other kind of CPU
    for forced in (True, False):
        monkeypatch.setenv(device_module.CPU_BF16_ENV, str(int(forced)))
        assert device_module.use_bf16("auto", torch.device("cpu")) is forced
        assert device_module.use_bf16("fp32", torch.device("cpu")) is False


def test_no_cpuinfo_means_no_native_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(device_module, "CPUINFO", str(tmp_path / "absent"))
    monkeypatch.delenv(device_module.CPU_BF16_ENV, raising=False)
    assert device_module.cpu_has_bf16() is False
