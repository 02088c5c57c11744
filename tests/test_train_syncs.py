"""The training loop waits for the device only every few steps: no `.item()`, `bool(tensor)` or
other host read per step; a non-finite loss is still caught and named by its epoch and first step; each
epoch's order and augmentation are drawn at once, so a resumed epoch and the ranks of a distributed run
get exactly the batches of one uninterrupted process. On CUDA, `torch.cuda.set_sync_debug_mode("error")`
turns any other synchronisation during the training steps into an error."""

import contextlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import cnnlab.training
from cnnlab.data import Augmentation, DeviceLoader, Holding, Sampling
from cnnlab.errors import Interrupted, TrainingError
from cnnlab.presets import preset
from cnnlab.training import TrainControl, train

CPU = torch.device("cpu")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HOST_READS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy")
EPOCHS, BATCH, IMAGES, EVERY = 2, 4, 120, 10  # 30 steps an epoch, a host read every 10 steps
STEPS = IMAGES // BATCH


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def loader(device=CPU, hold=Holding(), shard=(0, 1), **augment) -> DeviceLoader:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (IMAGES, 8, 8, 3), dtype=np.uint8)
    sampling = Sampling(shuffle=True, drop_last=True, seed=1, shard=shard)
    augment = Augmentation(flip=True, translate=1, cutout=2, **augment)
    return DeviceLoader(
        images, rng.integers(0, 3, IMAGES), BATCH, device, hold=hold, augment=augment, sampling=sampling
    )


def config(**overrides):
    return preset(
        "fast", **{"epochs": EPOCHS, "batch_size": BATCH, "lr": 0.05, "warmup_epochs": 0.5, "threads": 1, **overrides}
    )


@contextlib.contextmanager
def counting_host_reads():
    """Counts every Python-level read of a tensor's value on the host while inside."""
    counts = {name: 0 for name in HOST_READS}
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counted(name):
        def read(self, *args, **kwargs):
            counts[name] += 1
            return originals[name](self, *args, **kwargs)

        return read

    for name in HOST_READS:
        setattr(torch.Tensor, name, counted(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("progress", [True, False])
def test_loop_reads_the_device_every_n_steps_not_every_step(progress):
    model, data = tiny_model(), loader()
    with counting_host_reads() as counts:
        history = train(
            model, data, None, config(progress=progress), ["a", "b", "c"], control=TrainControl(read_every_steps=EVERY)
        )
    assert [r["epoch"] for r in history] == [1, 2] and all(np.isfinite(r["loss"]) for r in history)
    reads = sum(counts.values())
    # a few reads at each epoch's end and one every EVERY steps, far from one a step (60)
    assert reads <= EPOCHS * 3 + EPOCHS * STEPS // EVERY, counts


class NanAt(nn.Module):
    """The tiny model, whose logits are nan at its `call`-th forward pass only (the weights follow)."""

    def __init__(self, call: int):
        super().__init__()
        self.net, self.call, self.calls = tiny_model(), call, 0

    def forward(self, inputs):
        self.calls += 1
        logits = self.net(inputs)
        return logits * float("nan") if self.calls == self.call else logits


class StepLog(cnnlab.training.Callback):
    def __init__(self):
        self.steps, self.epochs = [], []

    def on_step_end(self, epoch, step):
        self.steps.append((epoch, step))

    def on_epoch_end(self, epoch, record, model):
        self.epochs.append((epoch, len(self.steps)))


def test_a_callback_that_defines_on_step_end_hears_every_step_and_others_are_not_asked():
    log, plain = StepLog(), cnnlab.training.Callback()
    assert cnnlab.training.step_callbacks([plain, log, plain]) == (log,)
    train(tiny_model(), loader(), None, config(progress=False), ["a", "b", "c"], callbacks=[plain, log])
    assert log.steps == [(epoch, step) for epoch in range(1, EPOCHS + 1) for step in range(1, STEPS + 1)]
    assert log.epochs == [(epoch, epoch * STEPS) for epoch in range(1, EPOCHS + 1)]


def test_non_finite_loss_names_its_first_step_and_stops_at_the_next_read():
    model = NanAt(STEPS + 13)  # epoch 2, step 13; the next read is at step 20
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at epoch 2, step 13;"):
        train(
            model, loader(), None, config(progress=False), ["a", "b", "c"], control=TrainControl(read_every_steps=EVERY)
        )
    assert model.calls <= STEPS + 20  # not left to run to the epoch's end


def test_non_finite_loss_read_at_the_epoch_end_and_before_a_checkpoint():
    # steps between reads: the epoch's end is read all the same (nan at epoch 1, step 29 of 30)
    with pytest.raises(TrainingError, match=r"at epoch 1, step 29;"):
        train(
            NanAt(29),
            loader(),
            None,
            config(progress=False),
            ["a", "b", "c"],
            control=TrainControl(read_every_steps=1000),
        )
    # a stop asked after a nan: the error, not a checkpoint of nan weights
    saved, asked = [], iter([None] * 5 + ["SIGINT"] * 100)
    with pytest.raises(TrainingError, match=r"at epoch 1, step 3;"):
        train(
            NanAt(3),
            loader(),
            None,
            config(progress=False),
            ["a", "b", "c"],
            control=TrainControl(
                save_checkpoint=saved.append, read_every_steps=1000, stop_requested=lambda: next(asked)
            ),
        )
    assert saved == []


def test_stop_mid_epoch_checkpoints_the_running_sums():
    saved, asked = [], iter([None] * 6 + ["SIGINT"] * 100)
    with pytest.raises(Interrupted, match="SIGINT at epoch 1, step 7; checkpoint saved"):
        train(
            tiny_model(),
            loader(),
            None,
            config(progress=False),
            ["a", "b", "c"],
            control=TrainControl(
                save_checkpoint=saved.append, read_every_steps=EVERY, stop_requested=lambda: next(asked)
            ),
        )
    state = saved[0]
    assert (state["epoch"], state["step"], state["sums"]["seen"]) == (1, 7, 7 * BATCH)
    assert state["sums"]["loss_sum"].device == CPU and 0 < float(state["sums"]["loss_sum"]) < 7 * BATCH * 5
    assert 0 <= int(state["sums"]["correct"]) <= 7 * BATCH


def batches(data: DeviceLoader, epoch: int, start: int = 0):
    data.set_epoch(epoch)
    return [(inputs.clone(), labels.clone()) for inputs, labels in data.batches(start)]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


JITTER = dict(brightness=0.3, contrast=0.2)


def test_an_epoch_started_at_any_step_gets_the_same_batches():
    data = loader(crop_scale=0.5, **JITTER)
    whole = batches(data, 3)
    assert same(batches(data, 3, 17), whole[17:]) and same(batches(data, 3, STEPS - 1), whole[-1:])
    assert same(batches(data, 3), whole) and not same(batches(data, 4), whole)  # fixed by (seed, epoch)


@pytest.mark.parametrize("flip_alternate", [False, True])
def test_the_ranks_together_get_the_one_process_batches(flip_alternate):
    whole = batches(loader(crop_scale=0.5, flip_alternate=flip_alternate, **JITTER), 2)
    parts = [
        batches(loader(crop_scale=0.5, shard=(rank, 2), flip_alternate=flip_alternate, **JITTER), 2) for rank in (0, 1)
    ]
    joined = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(*parts)]
    assert same(joined, whole)


def test_an_epoch_draws_its_randomness_in_one_go(monkeypatch):
    made = []
    real = torch.Generator

    def generator(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "Generator", generator)
    data = loader(crop_scale=0.5)
    for epoch in (1, 2):
        data.set_epoch(epoch)
        assert sum(1 for _ in data.batches()) == STEPS
    assert len(made) == 2  # one generator an epoch, not one a step


# --- CUDA: the sync debug mode turns any synchronisation but the loop's own reads into an error ---


def cuda_model_and_data() -> tuple[nn.Module, DeviceLoader]:
    """Copied to the GPU before any synchronisation is counted (copies from pageable memory wait)."""
    device = torch.device("cuda")
    model, data = tiny_model().to(device, memory_format=torch.channels_last), loader(device)
    torch.cuda.synchronize()
    return model, data


def cuda_training(model: nn.Module, data: DeviceLoader, compile: bool) -> list[dict]:
    return train(
        model,
        data,
        None,
        config(progress=True, compile=compile),
        ["a", "b", "c"],
        control=TrainControl(read_every_steps=EVERY),
    )


@CUDA
def test_cuda_training_steps_never_synchronise(monkeypatch):
    cuda_training(*cuda_model_and_data(), compile=False)  # warm-up: cuDNN's algorithm search, cached
    model, data = cuda_model_and_data()
    reads = []
    original = cnnlab.training.host_values

    def allowed(*tensors):  # the loop's own reads: every EVERY steps and at the epoch's end
        reads.append(len(tensors))
        torch.cuda.set_sync_debug_mode(0)
        try:
            return original(*tensors)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(cnnlab.training, "host_values", allowed)
    torch.cuda.set_sync_debug_mode("error")  # any other synchronisation raises
    try:
        history = cuda_training(model, data, compile=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(history) == EPOCHS and all(np.isfinite(r["loss"]) for r in history)
    assert 0 < len(reads) <= EPOCHS * (1 + STEPS // EVERY)


@CUDA
def test_cuda_compiled_training_synchronises_only_to_read():
    # compiling (in the first step) may synchronise: counted, not refused; still far fewer than one a step
    model, data = cuda_model_and_data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            history = cuda_training(model, data, compile=True)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert len(history) == EPOCHS and all(np.isfinite(r["loss"]) for r in history)
    assert len(syncs) <= EPOCHS * (1 + STEPS // EVERY) + 10, syncs  # 60 steps


@CUDA
def test_cuda_streaming_loader_does_not_synchronise_per_batch():
    data = loader(torch.device("cuda"), Holding(stream=True))
    data.set_epoch(1)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            count = sum(1 for _ in data.batches())
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert count == STEPS and len(syncs) <= 1, [str(w.message) for w in syncs]  # the epoch's order, once


def test_compile_trains_a_tiny_model_on_the_cpu(monkeypatch):
    pytest.importorskip("torch._inductor")
    compiled, real = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: compiled.append(module) or real(module, **kwargs))
    eager = train(tiny_model(), loader(), None, config(progress=False, epochs=1), ["a", "b", "c"])
    assert compiled == []  # off by default
    fused = train(tiny_model(), loader(), None, config(progress=False, epochs=1, compile=True), ["a", "b", "c"])
    assert len(compiled) == 1
    # the same training to float noise (the compiled kernels sum in another order)
    assert fused[0]["loss"] == pytest.approx(eager[0]["loss"], abs=1e-4)
    assert fused[0]["accuracy"] == pytest.approx(eager[0]["accuracy"], abs=0.02)
