"""The optimizers' multi-tensor kernels on the CPU change nothing but speed."""

import pytest
import torch

from cnnlab.config import Config
from cnnlab.optim import KerasAdam, build_optimizer


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_cpu_optimizers_give_the_per_parameter_loops_numbers(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    twin.load_state_dict(model.state_dict())
    cfg = Config(optimizer=name, lr=0.05, weight_decay=1e-3)
    ours = build_optimizer(model, cfg)
    assert ours.defaults["foreach"] is True and not ours.defaults.get("fused")
    kind = {"sgd": torch.optim.SGD, "adam": KerasAdam, "adamw": torch.optim.AdamW}[name]
    extra = (
        {"momentum": cfg.momentum, "nesterov": cfg.nesterov}
        if name == "sgd"
        else {"betas": (cfg.momentum, 0.999), "eps": cfg.adam_eps}
    )
    loop = kind(twin.parameters(), lr=0.05, weight_decay=1e-3, foreach=False, **extra)
    inputs, targets = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(5):
        for net, opt in ((model, ours), (twin, loop)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(inputs), targets).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
