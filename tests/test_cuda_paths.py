"""The CUDA paths, checked on the CPU: where the code would wait for the GPU (a copy to the host, a host
tensor made per layer, a collective per step) or recompile, the calls are counted; where it picks or reports
a GPU, torch.cuda is patched."""

import signal

import pytest
import torch
import torch.nn as nn

from cnnlab.evaluation import predict_batches


def test_evaluation_copies_its_logits_to_the_host_once_not_per_batch(monkeypatch):
    copies = []
    to_host = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(self.shape) or to_host(self, *a, **k))
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    batches = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(4)]
    logits, labels = predict_batches(model, batches)
    assert copies == [(20, 3), (20,)]  # the logits and the labels, each once, whole
    assert torch.equal(labels, torch.cat([b[1] for b in batches]))
    assert torch.allclose(logits, model(torch.cat([b[0] for b in batches])).detach())


class Stop(Exception):
    pass


def test_a_sweep_worker_on_cuda_n_makes_gpu_n_its_current_device(monkeypatch, tmp_path):
    from cnnlab.sweep import running

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(torch.device(device)))
    monkeypatch.setattr(running, "open_study", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    for device in ("cuda:1", None, "cpu"):
        with pytest.raises(Stop):  # stopped where the worker opens its study: after choosing its device
            running.work(str(tmp_path), device=device)
    assert chosen == [torch.device("cuda:1")]


def test_ranks_agree_on_a_stop_every_few_calls_not_every_step(monkeypatch):
    from cnnlab import distributed

    reduced_at, call = [], [0]

    def all_reduce(code, op=None, group=None):  # the other rank was asked to stop (SIGTERM) at its 3rd call
        reduced_at.append(call[0])
        code.fill_(max(int(code), signal.SIGTERM.value if call[0] >= 3 else 0))

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    agree, answers = distributed.StopAgreement(every=10), []
    for call[0] in range(1, 26):
        answers.append(agree(None))
    assert reduced_at == [10, 20]
    assert answers[:9] == [None] * 9 and answers[9:] == [None if (i + 1) % 10 else "SIGTERM" for i in range(9, 25)]
    monkeypatch.setattr(distributed, "active", lambda: False)  # one process: its own reason, at once
    assert distributed.StopAgreement(every=10)("SIGINT") == "SIGINT" and reduced_at == [10, 20]


@pytest.mark.parametrize("momentum", [0.1, None])  # None: the cumulative average
def test_global_batch_statistics_make_no_host_tensor_and_read_nothing_back(monkeypatch, momentum):
    """On a GPU a tensor made from host numbers is a copy the host waits for, and so is a read: in every
    BatchNorm layer's forward of every step, that would be a wait per layer. One rank here (its sum is itself)."""
    from cnnlab import distributed

    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda tensor, group=None: None)
    torch.manual_seed(0)
    plain, synced = nn.BatchNorm2d(3, momentum=momentum), nn.BatchNorm2d(3, momentum=momentum)
    distributed.sync_batchnorm(nn.Sequential(synced), torch.device("cpu"))
    inputs = [torch.randn(4, 3, 5, 5) for _ in range(3)]
    made = []
    for name in ("new_tensor", "item", "__float__", "__int__", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _n=name, _o=original, **k: made.append(_n) or _o(self, *a, **k)
        )
    outputs = [synced(x) for x in inputs]
    monkeypatch.undo()
    assert made == []
    for x, y in zip(inputs, outputs):
        torch.testing.assert_close(y, plain(x))
    torch.testing.assert_close(synced.state_dict(), plain.state_dict())


def test_peak_gpu_memory_is_what_tensors_held_on_the_gpu_since_the_runs_start(monkeypatch):
    from cnnlab.device import peak_device_memory, reset_peak_device_memory

    held = {"peak": 0}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: held.update(peak=0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: held["peak"])
    held["peak"] = 5 * 10**9  # an earlier run in this process (a sweep worker)
    reset_peak_device_memory(torch.device("cuda:1"))
    held["peak"] = 3 * 10**9
    assert peak_device_memory(torch.device("cuda:1")) == 3 * 10**9
    reset_peak_device_memory(torch.device("cpu"))  # the CPU's is the process's resident memory: none here
    assert held["peak"] == 3 * 10**9 and peak_device_memory(torch.device("cpu")) is None


@pytest.fixture
def tf32_defaults():
    """torch's TF32 flags put back to its defaults after the test (they are process-wide)."""
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True


def test_a_training_on_a_gpu_sets_tf32_as_its_precision_asks_records_it_and_puts_it_back(monkeypatch, tf32_defaults):
    from cnnlab import runs
    from cnnlab.device import set_tf32, tf32_for, tf32_state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "a GPU")
    for caller in (True, False):  # whatever the calling program had set
        set_tf32(caller)
        before = tf32_state()
        for precision, expected in (("auto", True), ("fp32", False), ("bf16", True)):
            with tf32_for(precision, torch.device("cuda", 0)):
                assert runs.environment()["tf32"] == {"matmul": expected, "conv": expected}, precision
            assert tf32_state() == before
        with tf32_for("fp32", torch.device("cpu")):  # a CPU run leaves them
            assert tf32_state() == before
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runs.environment()["tf32"] is None  # nothing to say on a CPU


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "fp32_precision"), reason="fp32_precision: torch >= 2.9")
def test_tf32_kept_readable_by_torch_and_a_caller_that_set_fp32_precision_gets_it_back(tf32_defaults):
    """torch's own code (dynamo, inductor) reads the allow_tf32 flags, which cannot be read once TF32 is set by
    fp32_precision alone. A caller may have done so: the training's matmuls are fp32 as asked, readable as
    dynamo reads them, and the caller's setting comes back after."""
    from cnnlab.device import tf32_for, tf32_state

    b = torch.backends
    b.cuda.matmul.fp32_precision, b.cudnn.fp32_precision = "tf32", "tf32"
    assert tf32_state() is None  # torch refuses the legacy read here
    with tf32_for("fp32", torch.device("cuda", 0)):
        assert b.cuda.matmul.allow_tf32 is False and torch._C._get_cublas_allow_tf32() is False
    assert (b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision) == ("tf32", "tf32")


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="fast94's Muon needs torch >= 2.9")
def test_a_compiled_training_compiles_once_though_a_param_group_finishes_early(tmp_path, monkeypatch):
    """fast94's whitening bias trains its first epoch only; a compiled model guards on each parameter's
    requires_grad, so freezing the bias would compile the step again mid-run. Counted with dynamo's eager
    backend (the graphs it captures, no code generated)."""
    import functools

    from conftest import make_folder
    from torch._dynamo.utils import counters

    from cnnlab.pipeline import prepare
    from cnnlab.presets import preset
    from cnnlab.training import train

    data = make_folder(tmp_path / "ds", per_class=8, size=32)
    cfg = preset("fast94", data=data, epochs=2, batch_size=8, lr=1340 * 8 / 2000, whiten_bias_epochs=1.0)
    cfg = cfg.replace(precision="fp32", device="cpu", threads=1, progress=False, log="none", compile=True)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch.manual_seed(0)
    ready = prepare(cfg)
    start = ready.model.whiten.bias.detach().clone()
    torch._dynamo.reset()
    counters.clear()
    train(ready.model, ready.train_loader, ready.val_loader, cfg, ready.dataset.classes)
    assert counters["stats"]["unique_graphs"] == 1
    assert not torch.equal(ready.model.whiten.bias, start)  # it trained in its epoch
