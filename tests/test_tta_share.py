"""Test-time augmentation for a share of each batch (tta_share): the plain logits of every image, then the views
for the least confident ones, their plain logits reused as the un-mirrored view; exports give every image the
views."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from conftest import make_dataset

import cnnlab
from cnnlab import ConfigError, preset, train_run
from cnnlab.cli import main
from cnnlab.config import load_config_file, saved_config
from cnnlab.evaluation import TestTimeAugmentation, infer, tta_logits

FULL = TestTimeAugmentation(flip=True, translate=1)  # airbench's TTA level 2: 6 passes per image


class ImageByImage(torch.nn.Module):
    """A small random conv net applied to one image at a time, counting the images it is given: a row's logits
    cannot depend on the other images of its batch (a batched matmul may sum in another order for another batch
    size, on some CPUs), so rows computed in different batches compare exactly."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)
        )
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return torch.cat([self.net(image[None]) for image in x])


def confidence(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(1).amax(1)


def test_share_1_gives_every_image_the_views_exactly_as_before():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(6, 3, 8, 8)

    def pair(view):
        return 0.5 * (model(view) + model(view.flip(-1)))

    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    with torch.no_grad():  # the weighted views, computed as tta_logits computed them before tta_share
        before = 0.5 * pair(x) + 0.25 * (pair(padded[:, :, :8, :8]) + pair(padded[:, :, 2:, 2:]))
        assert torch.equal(infer(model, x, tta=TestTimeAugmentation(flip=True, translate=1, share=1.0)), before)
    assert FULL.share == 1.0 and TestTimeAugmentation.of(preset("fast")).share == 1.0  # the default


def test_the_least_confident_share_gets_the_views_and_the_others_keep_the_plain_logits():
    model = ImageByImage()
    x = torch.randn(10, 3, 8, 8)
    with torch.no_grad():
        plain, full = model(x), tta_logits(model, x, FULL)
        model.seen = 0
        mixed = infer(model, x, tta=dataclasses.replace(FULL, share=0.25))
    viewed = (mixed != plain).any(1)
    assert viewed.sum() == 3  # ceil(0.25 x 10)
    assert torch.equal(mixed[viewed], full[viewed]) and torch.equal(mixed[~viewed], plain[~viewed])
    assert confidence(plain)[viewed].max() < confidence(plain)[~viewed].min()  # the least confident three
    assert model.seen == 10 + 5 * 3  # the plain pass, then 5 views each: the plain one is not computed again


def test_the_count_is_ceil_of_share_times_the_batch_whatever_the_float_rounding():
    model = ImageByImage()
    x = torch.randn(100, 3, 8, 8)
    with torch.no_grad():
        plain = model(x)
        for share, count in ((0.07, 7), (0.125, 13), (0.001, 1), (0.999, 100)):  # 0.07 x 100 is 7.000000000000001
            mixed = infer(model, x, tta=dataclasses.replace(FULL, share=share))
            assert (mixed != plain).any(1).sum() == count, share


def test_ties_go_to_the_earlier_images_and_a_batch_of_one_gets_the_views():
    model = ImageByImage()
    x = torch.randn(1, 3, 8, 8).expand(4, -1, -1, -1).contiguous()  # one image four times: equal confidences
    with torch.no_grad():
        plain, full = model(x), tta_logits(model, x, FULL)
        mixed = infer(model, x, tta=dataclasses.replace(FULL, share=0.5))
        assert torch.equal(mixed[:2], full[:2]) and torch.equal(mixed[2:], plain[2:])
        assert not torch.equal(full[0], plain[0])  # the views change the logits: the checks above can fail
        one = infer(model, x[:1], tta=dataclasses.replace(FULL, share=0.01))
        assert torch.equal(one, full[:1])


@pytest.mark.parametrize("value", [0, 0.0, -0.25, 1.5, "nan", "half"])
def test_a_share_outside_0_to_1_is_refused_in_one_line_naming_the_key(value, capsys):
    with pytest.raises(ConfigError) as caught:
        preset("fast", tta_share=value)
    assert "'tta_share'" in str(caught.value) and "\n" not in str(caught.value)
    assert main(["train", "--tta-share", str(value), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'tta_share'" in err


@pytest.fixture(scope="module")
def share_run(tmp_path_factory) -> str:
    """A tiny finished run that evaluated with the views for a quarter of each batch (30 test images)."""
    tmp = tmp_path_factory.mktemp("tta-share")
    data = make_dataset(tmp / "ds", 10)
    out = str(tmp / "run")
    cfg = preset("fast", data=data, epochs=1, batch_size=8, threads=1, progress=False, log="none", tta_share=0.25)
    train_run(cfg, out)
    return out


def test_the_share_is_saved_with_the_run_and_read_back(share_run, tmp_path):
    with open(os.path.join(share_run, "config.json")) as fh:
        saved = json.load(fh)
    assert saved["config"]["tta_share"] == 0.25
    assert load_config_file(os.path.join(share_run, "config.json")).tta_share == 0.25
    older = {k: v for k, v in saved["config"].items() if k != "tta_share"}  # a run saved before the key
    assert saved_config(older).tta_share == 1.0
    assert cnnlab.load(share_run).tta == TestTimeAugmentation(flip=True, translate=1, share=0.25)


def test_the_export_gives_every_image_the_views_whatever_the_share(share_run, tmp_path, capsys):
    predictor = cnnlab.load(share_run, precision="fp32")
    test = os.path.join(os.path.dirname(share_run), "ds", "test")
    images = np.stack(
        [
            predictor.to_array(os.path.join(test, c, name))
            for c in sorted(os.listdir(test))
            for name in sorted(os.listdir(os.path.join(test, c)))
        ]
    )
    shared = predictor.predict(images)
    predictor.tta = dataclasses.replace(predictor.tta, share=1.0)
    full = predictor.predict(images)
    path = str(tmp_path / "model.pt")
    assert main(["export", share_run, "--format", "torchscript", "--out", path]) == 0
    assert "every image" in capsys.readouterr().out  # the printed note says so
    with torch.no_grad():
        exported = torch.jit.load(path)(torch.from_numpy(images)).numpy()
    assert np.allclose(exported, full, rtol=1e-5, atol=0)
    # and not the share's answers: those are a hundred times further from the views of every image
    away = np.abs(np.log(shared) - np.log(full)).max()
    assert away > 100 * np.abs(np.log(exported) - np.log(full)).max() and away > 0


def test_the_report_says_which_images_got_the_views(share_run):
    from cnnlab.report import build_report

    md, _ = build_report(share_run)
    assert "flip TTA with 1-pixel translations for the least confident 25% of each batch" in open(md).read()


def test_evaluate_can_try_another_share_on_a_finished_run(share_run, capsys):
    from cnnlab.pipeline import evaluate_run

    own, again, every = (
        evaluate_run(share_run),
        evaluate_run(share_run, tta_share=0.25),
        evaluate_run(share_run, tta_share=1.0),
    )
    assert (own["tta_share"], every["tta_share"]) == (0.25, 1.0)
    assert own["loss"] == again["loss"]  # the run's own share, given or not
    assert every["loss"] != own["loss"]  # three quarters of the images more got the views
    assert main(["evaluate", share_run, "--tta-share", "1"]) == 0
    out = capsys.readouterr().out
    assert "least confident 100% of each batch" in out and f"loss: {every['loss']:.4f}" in out
    assert main(["evaluate", share_run, "--tta-share", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'tta_share'" in err
