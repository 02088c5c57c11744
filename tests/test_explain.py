"""Grad-CAM: the map against a hand computation, the layer rule, the model left as it was, and a sanity
check on a dataset where the evidence is known (a bright square in one quadrant decides the class)."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.explain import cam_layer, explain_batches, grad_cam, heat_colors, overlay
from cnnlab.models import create_model, default_input_size, list_models


class GapNet(nn.Module):
    """conv -> ReLU (in place) -> conv -> global average pool -> linear: dy_c/dA_k(i, j) = W[c, k] / (h w)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.act = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.act(self.conv1(x)))).flatten(1))


def upsampled(raw, size):
    up = F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return up / up.amax((1, 2), keepdim=True)


def test_map_is_relu_of_gradient_weighted_channels():
    torch.manual_seed(0)
    model, x = GapNet(), torch.randn(3, 3, 12, 12)
    target = torch.tensor([0, 3, 1])
    cams = grad_cam(model, x, [target])
    assert cams.layer == "conv2"  # the last non-pooling 4-D map larger than 1x1
    with torch.no_grad():
        activation = model.conv2(model.act(model.conv1(x)))  # (3, 5, 6, 6)
    h, w = activation.shape[-2:]
    alpha = model.fc.weight[target].detach() / (h * w)  # (3, 5): the spatial mean of the gradients
    expected = F.relu((alpha[:, :, None, None] * activation).sum(1))
    assert cams.raw[0].shape == (3, 6, 6)
    torch.testing.assert_close(cams.raw[0], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cams.maps[0], upsampled(expected, (12, 12)), rtol=1e-5, atol=1e-6)
    assert cams.maps[0].amax((1, 2)).tolist() == [1.0, 1.0, 1.0]


def test_a_layer_followed_by_an_in_place_relu_reads_its_own_values_and_gradients():
    torch.manual_seed(1)
    model, x = GapNet(inplace=True), torch.randn(2, 3, 12, 12)
    target = torch.tensor([2, 0])
    cams = grad_cam(model, x, [target], layer="conv1")
    with torch.no_grad():
        pre = model.conv1(x)  # before the in-place ReLU
        after = model.conv2(F.relu(pre))
    # dy/dpre = dy/dafter backpropagated through conv2 and the ReLU's mask, by autograd on a fresh graph
    pre_grad = pre.clone().requires_grad_(True)
    score = model.fc(model.pool(model.conv2(F.relu(pre_grad))).flatten(1)).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(score, pre_grad)
    expected = F.relu((grad.mean((2, 3), keepdim=True) * pre).sum(1))
    assert after.shape[-1] == 6
    torch.testing.assert_close(cams.raw[0], expected, rtol=1e-5, atol=1e-6)


def test_model_left_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cams = grad_cam(model, torch.randn(4, 3, 8, 8), [torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1, 0, 0])])
    assert len(cams.maps) == 2 and cams.layer == "2"
    assert model.training  # mode restored; BatchNorm ran in eval mode: running statistics unchanged
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_layer_rule_skips_pooling_and_collapsed_maps():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 2),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    # 8x8 -> 4x4 (pool) -> conv, ReLU at 4x4 -> pool 2x2 -> conv to 1x1: the ReLU at 4x4 is the last map > 1x1
    # that is not a pooling layer's
    assert cam_layer(model, torch.randn(1, 3, 8, 8)) == "4"


@pytest.mark.parametrize("name", list_models())
def test_every_cnnlab_network_gets_a_map_at_its_input_size(name):
    torch.manual_seed(0)
    model, side = create_model(name, num_classes=10), default_input_size(name)
    cams = grad_cam(model, torch.randn(2, 3, side, side), [torch.tensor([3, 7])])
    assert cams.maps[0].shape == (2, side, side)
    assert cams.raw[0].shape[-1] > 1
    assert float(cams.maps[0].amin()) >= 0.0 and float(cams.maps[0].amax()) <= 1.0


class Block(nn.Module):
    """A residual block as timm's ResNet writes it: the shortcut added in place, then an in-place ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.conv(x)
        out += x
        return self.act(out)


class SelectAdaptivePool2d(nn.Module):
    """timm's head pool: a pooling layer and a flatten inside one module."""

    def __init__(self):
        super().__init__()
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()

    def forward(self, x):
        return self.flatten(self.pool(x))


class TimmLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(Block(6), Block(6))
        self.global_pool, self.fc = SelectAdaptivePool2d(), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.global_pool(self.stages(self.stem(x))))


def test_a_timm_like_network_maps_its_last_stage():
    torch.manual_seed(3)
    model, x, target = TimmLike(), torch.randn(2, 3, 16, 16), torch.tensor([2, 0])
    cams = grad_cam(model, x, [target])
    assert cams.layer == "stages"  # the last 4-D map to finish, not the head's pool or flatten
    with torch.no_grad():
        activation = model.stages(model.stem(x))
    alpha = model.fc.weight[target].detach() / 64  # global average pool over 8x8
    expected = F.relu((alpha[:, :, None, None] * activation).sum(1))
    torch.testing.assert_close(cams.raw[0], expected, rtol=1e-5, atol=1e-6)


def test_unknown_layer_is_a_one_line_error():
    with pytest.raises(CnnlabError, match="--cam-layer 'nope': no such module"):
        grad_cam(GapNet(), torch.randn(1, 3, 8, 8), [torch.tensor([0])], layer="nope")
    with pytest.raises(CnnlabError, match="not a 4-D"):
        grad_cam(GapNet(), torch.randn(1, 3, 8, 8), [torch.tensor([0])], layer="fc")


def test_batches_give_the_maps_of_one_batch():
    torch.manual_seed(2)
    model, x = GapNet(), torch.randn(5, 3, 12, 12)
    targets = [torch.tensor([0, 1, 2, 3, 0]), torch.tensor([3, 3, 1, 1, 2])]
    whole = grad_cam(model, x, targets)
    parts = explain_batches(model, x.split(2), targets)
    assert parts.layer == whole.layer == "conv2"
    for got, expected in zip(parts.maps + parts.raw, whole.maps + whole.raw):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


class SideBranch(GapNet):
    """GapNet that also computes a map its scores do not depend on."""

    def __init__(self):
        super().__init__()
        self.side = nn.Conv2d(3, 4, 3)
        self.frozen = nn.Conv2d(3, 4, 3).requires_grad_(False)

    def forward(self, x):
        self.side(x.detach())
        self.frozen(x.detach())
        return super().forward(x)


def test_a_layer_the_scores_do_not_depend_on_is_a_one_line_error():
    with pytest.raises(CnnlabError, match="--cam-layer 'side': the class scores do not depend on its output"):
        grad_cam(SideBranch(), torch.randn(1, 3, 8, 8), [torch.tensor([0])], layer="side")
    with pytest.raises(CnnlabError, match="--cam-layer 'frozen': the class scores do not depend on its output"):
        grad_cam(SideBranch(), torch.randn(1, 3, 8, 8), [torch.tensor([0])], layer="frozen")


def test_heat_colours_and_overlay():
    assert heat_colors(np.array([[0.0, 1.0]])).tolist() == [[[0, 0, 128], [128, 0, 0]]]
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    out = overlay(image, np.zeros((2, 2)), side=32)
    assert out.shape == (32, 32, 3) and out[0, 0].tolist() == [100, 100, 164]


def quadrant_images(n: int, rng: np.random.Generator, side: int = 32, square: int = 8, empty: bool = True):
    """Noise images with one bright square in a random place inside quadrant `label` (0 top-left, 1 top-right,
    2 bottom-left, 3 bottom-right), and with `empty`, a fifth class of noise alone (without it, a network could
    call quadrant 3 the absence of the others: no evidence to show). Returns (images float NCHW, labels,
    square corners (top, left))."""
    images = rng.normal(0.0, 0.5, (n, 3, side, side)).astype(np.float32)
    labels = rng.integers(0, 5 if empty else 4, n)
    half = side // 2
    corners = np.stack([rng.integers(0, half - square + 1, n), rng.integers(0, half - square + 1, n)], 1)
    corners += np.stack([labels // 2, labels % 2], 1) * half
    for image, label, (top, left) in zip(images, labels, corners):
        if label < 4:
            image[:, top : top + square, left : left + square] += 2.5
    return torch.from_numpy(images), torch.from_numpy(labels), corners


class AddCoords(nn.Module):
    """Appends each pixel's row and column (in [-1, 1]) as two channels: with a global pool, the network's
    only way to tell where the square is (CoordConv, Liu et al. 2018)."""

    def forward(self, x):
        n, _, h, w = x.shape
        rows = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(n, 1, h, w)
        cols = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(n, 1, h, w)
        return torch.cat([x, rows, cols], 1)


@pytest.fixture
def one_thread():
    # a tiny network trains faster on one thread than on two threads of a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_map_peaks_on_the_evidence(one_thread):
    torch.manual_seed(0)
    x, y, _ = quadrant_images(512, np.random.default_rng(0))
    model = nn.Sequential(
        AddCoords(),
        nn.Conv2d(5, 16, 4, stride=4),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _epoch in range(5):
        for start in range(0, len(x), 64):
            loss = F.cross_entropy(model(x[start : start + 64]), y[start : start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    tx, ty, corners = quadrant_images(200, np.random.default_rng(1), empty=False)
    model.eval()
    with torch.no_grad():
        assert (model(tx).argmax(1) == ty).float().mean() >= 0.95
    cams = grad_cam(model, tx, [ty])
    assert cams.layer == "4"  # the second ReLU, 8x8
    peak = cams.maps[0].flatten(1).argmax(1)
    rows, cols = (peak // 32).numpy(), (peak % 32).numpy()
    in_quadrant = (rows // 16 == ty.numpy() // 2) & (cols // 16 == ty.numpy() % 2)
    # the 8-pixel square, grown by the 4-pixel cell of the 8x8 map the peak is interpolated from
    in_square = (
        (rows >= corners[:, 0] - 4)
        & (rows < corners[:, 0] + 12)
        & (cols >= corners[:, 1] - 4)
        & (cols < corners[:, 1] + 12)
    )
    assert in_quadrant.mean() >= 0.9, in_quadrant.mean()
    assert in_square.mean() >= 0.9, in_square.mean()
