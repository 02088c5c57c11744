"""The seed preset's first layer computed from the 32x32 image equals the study's upscale-then-convolve."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_folder

from cnnlab import preset
from cnnlab.evaluation import predict_batches
from cnnlab.models import create_model
from cnnlab.models.upscale import NearestUpscaleConv2d, upscale_in_first_conv, upscaled_conv2d
from cnnlab.pipeline import make_loader, prepare, upscale_in_model


def upscale(x, factor):
    return x.repeat_interleave(factor[0], 2).repeat_interleave(factor[1], 3)


@pytest.mark.parametrize(
    "size, factor, kernel, stride",
    [
        ((32, 32), (8, 8), (11, 11), (4, 4)),  # the study: 32 -> 256, 11x11 stride 4 -> 62x62
        ((9, 7), (4, 6), (5, 3), (2, 3)),  # other shapes, factors and strides
        ((6, 5), (4, 4), (3, 7), (4, 1)),  # one phase per axis; a kernel wider than the factor
        ((5, 5), (6, 6), (4, 4), (3, 2)),  # phases whose last source row would fall outside
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_upscaled_convolution_equals_upscale_then_convolve_forward_and_gradients(size, factor, kernel, stride, dtype):
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(3, 3, *size, generator=gen, dtype=dtype)
    weight = torch.randn(5, 3, *kernel, generator=gen, dtype=dtype)
    bias = torch.randn(5, generator=gen, dtype=dtype)
    grad_out = None
    results = []
    for direct in (False, True):
        x, w, b = (t.clone().requires_grad_() for t in (source, weight, bias))
        out = upscaled_conv2d(x, w, b, factor, stride) if direct else F.conv2d(upscale(x, factor), w, b, stride)
        if grad_out is None:
            grad_out = torch.randn(out.shape, generator=gen, dtype=dtype)
        (out * grad_out).sum().backward()
        results.append((out.detach(), x.grad, w.grad, b.grad))
    for plain, phased in zip(*results):
        assert phased.shape == plain.shape
        # exact but for the order of additions: float64 to 1e-12, float32 to its rounding of sums of ~1e4 terms
        # (relative to the largest value; the plain convolution itself moves by 2.5e-6 between 1 and 2 threads)
        scale = plain.abs().max().item()
        tolerance = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(phased, plain, rtol=tolerance, atol=tolerance * scale)


def test_the_study_network_trains_the_same_from_the_32x32_images():
    # in float64: this network's gradients at a small batch jump at ReLU/max-pool ties (a 1e-6 change of the
    # inputs moves them by percents, in float64 too), so float32 rounding alone says nothing here; the layer
    # itself is checked in float32 above
    torch.manual_seed(0)
    plain = create_model("seed_alexnet", num_classes=10).double().to(memory_format=torch.channels_last)
    direct = create_model("seed_alexnet", num_classes=10).double().to(memory_format=torch.channels_last)
    direct.load_state_dict(plain.state_dict())
    assert upscale_in_first_conv(direct, (8, 8))
    images = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    labels = torch.tensor([0, 3, 7, 9])
    grads = []
    for model, inputs in ((plain, upscale(images, (8, 8))), (direct, images)):
        torch.manual_seed(1)  # the same dropout masks
        loss = F.cross_entropy(model(inputs), labels)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-10, atol=1e-10)
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, rtol=1e-9, atol=1e-9 * grad.abs().max().item(), msg=name)
    assert direct.state_dict().keys() == plain.state_dict().keys()  # checkpoints and exports are unchanged


def test_a_layer_that_cannot_take_the_source_is_left_alone():
    padded = torch.nn.Sequential(NearestUpscaleConv2d(3, 4, 3, stride=1, padding=1))
    odd_stride = torch.nn.Sequential(NearestUpscaleConv2d(3, 4, 3, stride=3))
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    for model in (padded, odd_stride, plain):
        assert not upscale_in_first_conv(model, (8, 8))
    assert all(m.upscale == (1, 1) for m in (padded[0], odd_stride[0]))
    assert not upscale_in_first_conv(torch.nn.Sequential(NearestUpscaleConv2d(3, 4, 3)), (1, 1))


def test_the_seed_preset_feeds_the_stored_images_and_evaluates_as_the_upscaled_ones(tmp_path):
    root = str(tmp_path / "ds")  # 32x32 images, as CIFAR's
    make_folder(tmp_path / "ds" / "train", per_class=10, size=32)
    make_folder(tmp_path / "ds" / "test", per_class=4, size=32, seed=1)
    # on the CPU wherever the suite runs: a GPU's TF32 convolutions would not compare to float32 tolerance
    cfg = preset("seed", data=root, batch_size=4, eval_batch_size=6, progress=False, threads=1, device="cpu")
    ready = prepare(cfg)
    assert ready.at_stored_size and ready.model[0].upscale == (8, 8)
    inputs, _ = next(iter(ready.train_loader.batches(0)))
    assert inputs.shape[1:] == (3, 32, 32)
    plain = make_loader(ready.dataset.test, ready.cfg, ready.prep, ready.device, training=False)
    stored = make_loader(ready.dataset.test, ready.cfg, ready.prep, ready.device, training=False, at_stored_size=True)
    assert next(iter(plain.batches(0)))[0].shape[1:] == (3, 256, 256)
    logits_direct, labels = predict_batches(ready.model, stored.batches(0))
    ready.model[0].upscale = (1, 1)
    logits_plain, labels_plain = predict_batches(ready.model, plain.batches(0))
    assert torch.equal(labels, labels_plain)
    torch.testing.assert_close(logits_direct, logits_plain, rtol=1e-4, atol=1e-4)
    # augmentation at the input size cannot be computed from the stored images: the loader then upscales as before
    for key in ({"cutout": 8}, {"rrc_scale_min": 0.5}, {"interpolation": "bilinear"}, {"image_size": 24}):
        assert not prepare(cfg.replace(**key)).at_stored_size, key
    # nor can early_size's downscale (and this AlexNet, its flattened features of a fixed size, takes 256x256 only)
    assert not upscale_in_model(ready.model, cfg.replace(early_size=128, early_epochs=1.0), ready.prep)
