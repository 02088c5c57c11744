"""The fast94 preset (issue 12): airbench94's network (fastnet94), Muon for the conv filters and Nesterov
SGD for the rest (cnnlab.optim), the whitening bias trained for its first epochs only, multi-view TTA."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_folder

import cnnlab
from cnnlab.cli import main
from cnnlab.config import Config
from cnnlab.errors import ConfigError
from cnnlab.evaluation import TestTimeAugmentation, infer
from cnnlab.models import count_params, create_model
from cnnlab.optim import Muon, MuonWithSGD, build_optimizer, build_scheduler
from cnnlab.presets import preset

muon_missing = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")


def fast94_config(**changes) -> Config:
    return preset("fast94", **changes)


# --- the network ---


def test_fastnet94_has_airbench94s_widths_frozen_bn_weights_and_dirac_convs():
    torch.manual_seed(0)
    model = create_model("fastnet94", num_classes=10)
    convs = [m for m in model.groups.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (24, 64),
        (64, 64),
        (64, 256),
        (256, 256),
        (256, 256),
        (256, 256),
    ]
    for conv in convs:  # the first in_channels filters pass their input channel through: identity at init
        cin = conv.in_channels
        dirac = torch.zeros(cin, cin, 3, 3)
        dirac[torch.arange(cin), torch.arange(cin), 1, 1] = 1
        assert torch.equal(conv.weight[:cin], dirac)
        if conv.out_channels > cin:  # the others keep the default random init
            assert conv.weight[cin:].abs().min() > 0
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 6
    for norm in norms:  # airbench's BatchNorm: weights fixed at 1, biases trained, running stats 0.6/0.4
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.weight.requires_grad
        assert norm.bias.requires_grad and norm.momentum == 0.4 and norm.eps == 1e-12
    assert model.head.weight.std().item() == pytest.approx(1.0, abs=1e-6) and model.head.bias is None
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    # whiten 24*3*2*2 + 24; convs 9*(24*64 + 64*64 + 64*256 + 3*256*256); BN biases 64*2 + 256*4; head 256*10
    assert count_params(model)["trainable"] == 24 + 9 * (24 * 64 + 64 * 64 + 64 * 256 + 3 * 256 * 256) + 1152 + 2560
    # logits: the head of the max over the last 3x3 map (airbench's MaxPool2d(3)), divided by the width (256)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    features = model.groups(model.act(model.whiten(x)))
    assert features.shape == (2, 256, 3, 3)
    expected = model.head(features.amax((2, 3))) / 256
    assert torch.allclose(model(x), expected, atol=1e-6, rtol=0)


# --- the optimizer ---


@muon_missing
def test_muon_takes_the_conv_filters_and_sgd_the_rest():
    model = create_model("fastnet94", num_classes=10)
    cfg = fast94_config()
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, MuonWithSGD) and isinstance(optimizer.muon, torch.optim.Muon)
    assert type(optimizer.sgd) is torch.optim.SGD
    filters = [m.weight for m in model.groups.modules() if isinstance(m, torch.nn.Conv2d)]
    assert optimizer.filters == filters  # the 6 conv filters; not the frozen whitening filters
    head, rest, whiten = optimizer.sgd.param_groups
    assert head["params"] == [model.head.weight]
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert rest["params"] == biases and whiten["params"] == [model.whiten.bias]
    assert whiten["lr_epochs"] == 3.0
    # airbench's rates for a summed loss over 2,000 images: 0.67 (head), 0.053 (biases); cnnlab's loss is the mean
    assert head["lr"] == pytest.approx(0.67 * 2000) and rest["lr"] == pytest.approx(0.053 * 2000)
    assert head["momentum"] == 0.85 and head["nesterov"]
    for group in (head, rest, whiten):  # lr x decay the same in each group: 2e-6 x batch, as airbench sets it
        assert group["lr"] * group["weight_decay"] == pytest.approx(2e-6 * 2000)
    (muon_group,) = optimizer.muon.param_groups
    assert muon_group["lr"] == 0.24 and muon_group["momentum"] == 0.6 and muon_group["weight_decay"] == 0
    assert muon_group["ns_steps"] == 3 and muon_group["nesterov"]
    assert optimizer.param_groups == optimizer.sgd.param_groups + optimizer.muon.param_groups  # one schedule
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    optimised = [p for g in optimizer.sgd.param_groups for p in g["params"]] + optimizer.filters
    assert len(optimised) == len({id(p) for p in optimised}) == sum(p.requires_grad for p in model.parameters())
    assert not frozen & {id(p) for p in optimised}


def _grads(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = (
            torch.randn(p.shape, generator=gen).to(memory_format=torch.contiguous_format) if p.requires_grad else None
        )


@muon_missing
@pytest.mark.parametrize(
    "layout, order", [(torch.contiguous_format, (0, 1, 2, 3)), (torch.channels_last, (0, 2, 3, 1))]
)
def test_a_muon_step_is_torch_muon_on_each_filter_as_a_matrix_after_renormalising(layout, order):
    """Each filter is a matrix out x (in*3*3), its columns in the filter's memory order (NS commutes with a
    permutation of the columns; the same order makes the comparison exact)."""
    torch.manual_seed(0)
    # Newton-Schulz in bf16, as torch's (emulated on CPUs without bf16 units: fastnet's smaller filters)
    model = create_model("fastnet", num_classes=10).to(memory_format=layout)
    optimizer = build_optimizer(model, fast94_config(precision="bf16"))
    conv = model.groups[2][4]  # a 128 x 128 x 3 x 3 filter
    matrix = conv.weight.detach().permute(order).reshape(128, -1).clone().requires_grad_(True)
    by_hand = torch.optim.Muon([matrix], lr=0.24, momentum=0.6, nesterov=True, weight_decay=0.0, ns_steps=3)
    for seed in range(2):  # the second step also goes through the momentum buffer
        _grads(model, seed)
        matrix.grad = conv.weight.grad.permute(order).reshape(128, -1).clone()
        with torch.no_grad():
            matrix.mul_(128**0.5 / matrix.norm())  # airbench: each filter's norm reset to sqrt(out) first
        optimizer.step()
        by_hand.step()
    assert torch.equal(conv.weight.detach().permute(order).reshape(128, -1), matrix.detach())
    assert conv.weight.is_contiguous(memory_format=layout)  # updated in place, layout kept


@muon_missing
def test_the_sgd_part_is_nesterov_sgd_with_each_groups_decay():
    torch.manual_seed(0)
    model = create_model("fastnet", num_classes=10)
    optimizer = build_optimizer(model, fast94_config())
    head = model.head.weight.detach().clone().requires_grad_(True)
    by_hand = torch.optim.SGD([head], lr=1340.0, momentum=0.85, nesterov=True, weight_decay=0.004 / 1340.0)
    for seed in range(2):
        _grads(model, seed)
        head.grad = model.head.weight.grad.clone()
        optimizer.step()
        by_hand.step()
    assert torch.equal(model.head.weight.detach(), head.detach())


@muon_missing
def test_muon_with_sgd_resumes_bit_exactly_from_its_state_dict():
    def run(steps: int, state: dict | None = None):
        torch.manual_seed(0)
        model = create_model("fastnet", num_classes=10).to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, fast94_config())
        scheduler = build_scheduler(optimizer, fast94_config(), steps_per_epoch=2)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        for seed in steps:
            _grads(model, seed)
            optimizer.step()
            scheduler.step()
        return model, optimizer, scheduler

    whole, _, _ = run(range(4))
    half, optimizer, scheduler = run(range(2))
    state = {"model": half.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    state = torch.load(_saved(state), weights_only=False)
    resumed, optimizer, _ = run(range(2, 4), state)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert optimizer.param_groups[0] is optimizer.sgd.param_groups[0]  # the schedule still reaches both parts


def _saved(state: dict):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@muon_missing
def test_every_group_follows_the_schedule_and_the_whitening_bias_stops_after_its_epochs():
    model = create_model("fastnet94", num_classes=10)
    cfg = fast94_config(epochs=8)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=25)  # CIFAR-10: 50,000 // 2,000
    seen = []
    for _ in range(200):
        seen.append([g["lr"] / g["initial_lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    head, rest, whiten, muon = zip(*seen)
    linear = [(200 - step) / 200 for step in range(200)]  # airbench's 1 - step / total_steps, no warm-up
    for factors in (head, rest, muon):
        assert factors == pytest.approx(linear, rel=1e-12, abs=0)
    # airbench trains the whitening layer's bias for 3 epochs only, its lr falling to 0 over them
    assert whiten[:75] == pytest.approx([(75 - step) / 75 for step in range(75)], rel=1e-12, abs=0)
    assert set(whiten[75:]) == {0.0}


def test_optimizer_muon_needs_conv_filters():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    with pytest.raises(ConfigError, match="optimizer 'muon'.*no trainable conv filters"):
        build_optimizer(model, Config(optimizer="muon"))


@pytest.mark.parametrize(
    "key, value", [("muon_momentum", 1.0), ("muon_lr", 0.0), ("tta_translate", -1), ("whiten_bias_epochs", -1.0)]
)
def test_bad_muon_and_tta_values_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=key):
        Config().replace(**{key: value})


# --- multi-view test-time augmentation ---


def test_multiview_tta_averages_the_mirrored_pairs_of_the_image_and_its_two_one_pixel_shifts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(2, 3, 8, 8)

    def pair(view):
        return 0.5 * (model(view) + model(view.flip(-1)))

    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    down_right, up_left = padded[:, :, :8, :8], padded[:, :, 2:, 2:]
    assert torch.equal(down_right[:, :, 1:, 1:], x[:, :, :7, :7])
    assert torch.equal(up_left[:, :, :7, :7], x[:, :, 1:, 1:])
    with torch.no_grad():
        expected = 0.5 * pair(x) + 0.25 * pair(down_right) + 0.25 * pair(up_left)
        views = TestTimeAugmentation(flip=True, translate=1)
        assert torch.allclose(infer(model, x, tta=views), expected, atol=1e-6, rtol=0)
        flip_only = TestTimeAugmentation(flip=True)
        assert torch.allclose(infer(model, x, tta=flip_only), pair(x), atol=1e-6, rtol=0)  # as before
        no_flip = TestTimeAugmentation(translate=1)
        assert torch.equal(infer(model, x, tta=no_flip), model(x))  # translations need the flip


# --- the preset ---


def test_fast94_preset_is_airbench94s_recipe_on_every_training_image():
    cfg = preset("fast94")
    assert cfg.val_fraction == 0.0 and cfg.model == "fastnet94" and cfg.optimizer == "muon"
    assert (cfg.epochs, cfg.batch_size, cfg.label_smoothing) == (8, 2000, 0.09)  # hiverge's, with its jitter
    assert (cfg.flip, cfg.translate, cfg.tta, cfg.tta_translate) == (True, 2, True, 1)
    assert (cfg.schedule, cfg.warmup_epochs, cfg.whiten_bias_epochs) == ("onecycle", 0.0, 3.0)
    assert (cfg.muon_lr, cfg.muon_momentum, cfg.momentum, cfg.nesterov) == (0.24, 0.6, 0.85, True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[str, str]:
    """(dataset, run directory) of one tiny fast94 epoch."""
    tmp = tmp_path_factory.mktemp("fast94")
    data = tmp / "ds"
    make_folder(data / "train", per_class=16, size=32)
    make_folder(data / "test", per_class=4, size=32, seed=1)
    out = str(tmp / "run")
    # the batch adapted to the 48 images (8), the lr with it (1340 x 8 / 2000)
    code = main(
        [
            "train",
            "--preset",
            "fast94",
            "--data",
            str(data),
            "--out",
            out,
            "--epochs",
            "1",
            "--eval-batch-size",
            "64",
            "--threads",
            "1",
            "--no-progress",
            "--log",
            "none",
        ]
    )
    assert code == 0
    return str(data), out


@muon_missing
def test_fast94_trains_one_tiny_epoch(tiny_run):
    _, out = tiny_run
    with open(os.path.join(out, "config.json")) as fh:
        saved = json.load(fh)
    assert saved["config"]["optimizer"] == "muon" and saved["data"]["sizes"] == {"training": 48, "test": 12}
    assert saved["config"]["batch_size"] == 8 and saved["config"]["lr"] == pytest.approx(1340 * 8 / 2000)
    with open(os.path.join(out, "metrics.json")) as fh:
        metrics = json.load(fh)
    assert metrics["epochs_run"] == 1 and metrics["test"]["n"] == 12
    with open(os.path.join(out, "history.json")) as fh:
        history = json.load(fh)
    assert history[0]["lr"] == 0.0 and math.isfinite(history[0]["loss"])  # the linear decay ends at 0


@muon_missing
def test_predict_and_export_apply_the_runs_translated_tta_views(tiny_run, tmp_path):
    data, out = tiny_run
    predictor = cnnlab.load(out, precision="fp32")
    assert predictor.tta == TestTimeAugmentation(flip=True, translate=1)
    images = np.stack(
        [
            predictor.to_array(os.path.join(data, "test", "a", name))
            for name in sorted(os.listdir(os.path.join(data, "test", "a")))
        ]
    )
    inputs = predictor.preprocess(torch.from_numpy(images))
    with torch.no_grad():
        expected = torch.softmax(infer(predictor.model, inputs, tta=predictor.tta), 1).numpy()
        flip_only = torch.softmax(infer(predictor.model, inputs, tta=TestTimeAugmentation(flip=True)), 1).numpy()
    # relative comparisons: the tiny classes are far apart, most probabilities are near 0 or 1
    # the translated views change the answer, by ten times the tolerance the comparisons below allow
    assert np.abs(np.log(expected) - np.log(flip_only)).max() > 1e-3
    assert np.allclose(predictor.predict(images), expected, rtol=1e-4, atol=0)
    path = str(tmp_path / "model.pt")
    assert main(["export", out, "--format", "torchscript", "--out", path]) == 0
    exported = torch.jit.load(path)
    with torch.no_grad():
        assert np.allclose(exported(torch.from_numpy(images)).numpy(), expected, rtol=1e-4, atol=0)


@muon_missing
def test_without_bf16_training_the_newton_schulz_runs_in_fp32_else_it_is_torchs_own_step():
    torch.manual_seed(0)
    grad = torch.randn(64, 576)
    results = {}
    for dtype in (torch.bfloat16, torch.float32):
        param = torch.nn.Parameter(torch.randn(64, 576, generator=torch.Generator().manual_seed(1)))
        param.grad = grad.clone()
        optimizer = Muon([param], lr=0.24, momentum=0.6, weight_decay=0.0, ns_steps=3, ns_dtype=dtype)
        optimizer.step()
        results[dtype] = param.detach().clone()
    torch_param = torch.nn.Parameter(torch.randn(64, 576, generator=torch.Generator().manual_seed(1)))
    torch_param.grad = grad.clone()
    torch.optim.Muon([torch_param], lr=0.24, momentum=0.6, weight_decay=0.0, ns_steps=3).step()
    assert torch.equal(results[torch.bfloat16], torch_param.detach())  # bf16: torch's step itself
    start = torch.randn(64, 576, generator=torch.Generator().manual_seed(1))
    fp32_update, bf16_update = start - results[torch.float32], start - results[torch.bfloat16]
    assert not torch.equal(fp32_update, bf16_update)
    assert torch.allclose(fp32_update, bf16_update, atol=0.02 * bf16_update.abs().max().item())  # bf16's rounding
    # the optimizer the config builds: bf16 only where the training computes in bf16
    model = create_model("fastnet", num_classes=10)
    assert build_optimizer(model, fast94_config(precision="fp32")).muon.ns_dtype == torch.float32
    assert build_optimizer(model, fast94_config(precision="bf16")).muon.ns_dtype == torch.bfloat16


# --- alternating flip ---


def _flips_by_image(loader, epoch: int) -> dict[int, bool]:
    """Image id -> mirrored, for one epoch of `loader` over the marked images of `marked_images`."""
    loader.set_epoch(epoch)
    seen = {}
    for inputs, _ in loader:
        for image in inputs:
            ident = round(image[1, 0, 0].item() * 255)  # channel 1: the image's id, the same everywhere
            seen[ident] = image[0, 0, 0].item() > 0  # channel 0: a mark on the right edge, on the left if mirrored
    return seen


def marked_images(n: int) -> np.ndarray:
    images = np.zeros((n, 4, 4, 3), dtype=np.uint8)
    images[:, :, :, 1] = np.arange(n, dtype=np.uint8)[:, None, None]
    images[:, :, 3, 0] = 200
    return images


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    from cnnlab.data.loader import Augmentation, DeviceLoader, Sampling

    n = 64
    loader = DeviceLoader(
        marked_images(n),
        np.zeros(n),
        16,
        torch.device("cpu"),
        augment=Augmentation(flip=True, flip_alternate=True),
        sampling=Sampling(shuffle=True, drop_last=True, seed=3),
    )
    epochs = [_flips_by_image(loader, epoch) for epoch in (1, 2, 3, 4)]
    assert all(sorted(flips) == list(range(n)) for flips in epochs)  # every image, once an epoch
    for before, after in zip(epochs, epochs[1:]):
        assert all(after[i] != before[i] for i in range(n))  # each image the other way round in the next epoch
    assert 16 <= sum(epochs[0].values()) <= 48  # the first epoch's choice at random per image (32 expected)
    plain = DeviceLoader(
        marked_images(n),
        np.zeros(n),
        16,
        torch.device("cpu"),
        augment=Augmentation(flip=True),
        sampling=Sampling(shuffle=True, drop_last=True, seed=3),
    )
    first, second = _flips_by_image(plain, 1), _flips_by_image(plain, 2)
    assert any(first[i] == second[i] for i in range(n))  # without it, each epoch draws afresh


def test_fast94_and_fast_flip_alternately_and_the_seed_preset_does_not():
    assert preset("fast94").flip_alternate and Config().flip_alternate and not preset("seed").flip_alternate


@muon_missing
def test_the_whitening_bias_gets_no_gradient_once_its_epochs_end_and_training_ends_as_before(tmp_path, monkeypatch):
    """An update at lr 0 changes nothing, so once the bias's own epochs end its gradient (and the first
    conv's input gradient it needs) is not computed, as airbench detaches it; every number stays the same."""
    import sys

    from cnnlab.pipeline import prepare
    from cnnlab.training import TrainControl, train

    data = make_folder(tmp_path / "ds", per_class=16, size=32)
    cfg = fast94_config(
        data=data,
        epochs=3,
        batch_size=8,
        lr=1340 * 8 / 2000,
        whiten_bias_epochs=1.0,
        precision="fp32",
        device="cpu",
        threads=1,
        progress=False,
        log="none",
    )

    def run(freeze: bool, control: TrainControl | None = None) -> tuple[list[bool], dict, torch.Tensor]:
        if not freeze:
            monkeypatch.setattr(sys.modules["cnnlab.training"], "finished_groups", lambda *args: [])
        torch.manual_seed(0)
        ready = prepare(cfg)
        model, flags = ready.model, []
        model.register_forward_pre_hook(
            lambda module, args: flags.append(module.whiten.bias.requires_grad) if module.training else None
        )
        bias = model.whiten.bias.detach().clone()
        train(model, ready.train_loader, ready.val_loader, cfg, ready.dataset.classes, control=control)
        assert model.whiten.bias.requires_grad  # the model is handed back as it came
        monkeypatch.undo()
        return flags, {k: v.clone() for k, v in model.state_dict().items()}, bias

    flags, frozen, start = run(freeze=True)
    steps = 6  # 48 training images (val_fraction 0), batch 8
    assert len(flags) == 3 * steps
    assert flags == [True] * steps + [False] * 2 * steps
    plain_flags, plain, plain_start = run(freeze=False)
    assert set(plain_flags) == {True} and torch.equal(start, plain_start)
    assert not torch.equal(frozen["whiten.bias"], start)  # it trained in its epoch ...
    for key, value in plain.items():  # ... and the rest of the run is the one without the shortcut
        # (bit-identical on the EPYC it was written on; another CPU's kernels may round the two backward passes
        # of the first convolution differently)
        assert torch.allclose(frozen[key].float(), value.float(), rtol=1e-4, atol=1e-5), key
