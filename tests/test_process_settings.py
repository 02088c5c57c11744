"""Process-wide settings (malloc thresholds, cudnn.benchmark) are the command line's choice: the library's
prepare/train leave a caller's process as it was; `cnnlab train` tunes its own (device.tune_for_training)."""

import pytest
import torch
from conftest import SWEEP_FLAGS, make_dataset

from cnnlab import device, preset, train_run
from cnnlab.cli import main


def test_train_run_changes_no_process_setting_and_the_cli_does(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(device, "tune_host_allocator", lambda: calls.append("malloc") or True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    data = make_dataset(tmp_path / "ds", 12)
    train_run(preset("fast", data=data, epochs=1, batch_size=8, threads=1, progress=False), str(tmp_path / "lib"))
    assert calls == [] and torch.backends.cudnn.benchmark is False
    assert main(["train", "--data", data, "--out", str(tmp_path / "cli"), "--epochs", "1", *SWEEP_FLAGS]) == 0
    assert calls == ["malloc"]  # on this CPU; on a GPU cudnn.benchmark instead


def test_tune_for_training_on_a_gpu_sets_cudnn_benchmark(monkeypatch):
    monkeypatch.setattr(device, "resolve_device", lambda name: torch.device("cuda", 0))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    device.tune_for_training("cuda")
    assert torch.backends.cudnn.benchmark is True


def test_a_device_that_cannot_be_had_is_left_for_the_run_to_report(monkeypatch):
    from cnnlab.errors import ConfigError

    def unavailable(name):
        raise ConfigError("config key 'device' is 'cuda' but no CUDA device is available")

    monkeypatch.setattr(device, "resolve_device", unavailable)
    monkeypatch.setattr(device, "tune_host_allocator", lambda: pytest.fail("tuned for a device it cannot have"))
    device.tune_for_training("cuda")  # no error here: `cnnlab train` reports it in its one line
