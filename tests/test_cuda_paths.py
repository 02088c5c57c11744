"""The CUDA paths, checked on the CPU: where the code would wait for the GPU (a copy to the host, a host
tensor made per layer, a collective per step) or recompile, the calls are counted; where it picks or reports
a GPU, torch.cuda is patched."""

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
    import cnnlab.sweep

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(torch.device(device)))
    monkeypatch.setattr(cnnlab.sweep, "open_study", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    for device in ("cuda:1", None, "cpu"):
        with pytest.raises(Stop):  # stopped where the worker opens its study: after choosing its device
            cnnlab.sweep.work(str(tmp_path), device=device)
    assert chosen == [torch.device("cuda:1")]
