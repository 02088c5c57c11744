"""The CUDA paths, checked on the CPU: where the code would wait for the GPU (a copy to the host, a host
tensor made per layer, a collective per step) or recompile, the calls are counted; where it picks or reports
a GPU, torch.cuda is patched."""

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
