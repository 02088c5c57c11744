"""Where bf16 is chosen: `--precision auto` takes bf16 only where the hardware computes it natively."""

import pytest
import torch

from cnnlab import device as device_module

CUDA = torch.device("cuda", 0)


def fake_cuda(monkeypatch, capability: tuple[int, int], with_emulation_flag: bool = True) -> None:
    """A CUDA device of `capability`, whose bf16 torch emulates below 8.0 (V100 7.0, T4 7.5): the answers of
    torch.cuda.is_bf16_supported, with and without its `including_emulation` parameter (older torch)."""
    native = capability[0] >= 8
    if with_emulation_flag:

        def is_bf16_supported(including_emulation: bool = True) -> bool:
            return native or including_emulation
    else:

        def is_bf16_supported() -> bool:
            return True  # emulated or not

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", None)


@pytest.mark.parametrize("flag", [True, False], ids=["including_emulation", "older_torch"])
@pytest.mark.parametrize("capability, native", [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_auto_takes_bf16_only_on_gpus_with_bf16_units(monkeypatch, capability, native, flag):
    fake_cuda(monkeypatch, capability, with_emulation_flag=flag)
    assert device_module.use_bf16("auto", CUDA) is native
    assert device_module.use_bf16("bf16", CUDA) is True  # asked for: given, emulated or not
    assert device_module.use_bf16("fp32", CUDA) is False
