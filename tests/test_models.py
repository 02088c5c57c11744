import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models import count_params, create_model, list_models, summary


def test_seed_alexnet_summary_matches_keras():
    text = summary(create_model("seed_alexnet"), 256)
    assert text.splitlines()[-4:-1] == [
        "Total params: 8,636,810",
        "Trainable params: 8,634,314",
        "Non-trainable params: 2,496",
    ]
    assert "(None, 62, 62, 96)" in text and "(None, 6, 6, 256)" in text and "(None, 9216)" in text


def test_seed_alexnet_uses_keras_init_and_batchnorm():
    model = create_model("seed_alexnet")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 5 and all(m.momentum == 0.01 and m.eps == 1e-3 for m in bns)
    conv = model[0]
    bound = (6 / (11 * 11 * 3 + 11 * 11 * 96)) ** 0.5  # glorot_uniform limit
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert all(m.bias.abs().sum() == 0 for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError, match="known models: fastnet, fastnet94, fastnet_wide, seed_alexnet"):
        create_model("resnet9000")


@pytest.mark.parametrize("name", list_models())
def test_every_model_classifies_its_input(name):
    model = create_model(name, num_classes=7).eval()
    size = 256 if name == "seed_alexnet" else 32
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 7)
    assert count_params(model)["total"] > 0


def test_whitening_init_decorrelates_patches():
    torch.manual_seed(0)
    model = create_model("fastnet")
    base = torch.randn(64, 1, 16, 16)
    inputs = torch.cat([base, 0.5 * base + 0.1 * torch.randn(64, 1, 16, 16), torch.randn(64, 1, 16, 16)], 1)
    model.init_whitening(inputs, eps=0.0)
    out = torch.nn.functional.conv2d(inputs, model.whiten.weight[:12])
    flat = out.permute(1, 0, 2, 3).reshape(12, -1)
    cov = torch.cov(flat)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert not model.whiten.weight.requires_grad
