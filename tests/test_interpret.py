"""cnnlab interpret: the top losses with their files, the confused pairs, and a self-contained page in which
every name from the user's folder is text, never markup."""

import io
import json
import math
import os
import pathlib
import shutil
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from conftest import write_image
from PIL import Image
from test_cifar import write_cifar

import cnnlab
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.interpret import confused_pairs, interpret_run, render_html, split_root, top_loss_rows, write_interpretation

EVIL = "<img src=x onerror=alert(1)>"


def make_evil_dataset(root) -> str:
    """Two classes of 32x32 images, one class folder and one file named as markup."""
    rng = np.random.default_rng(0)
    for part, count in (("train", 16), ("test", 6)):
        for k, name in enumerate((EVIL, "plain")):
            for i in range(count):
                image = rng.integers(0, 80, (32, 32, 3)).astype(np.uint8)
                image[..., k] += 150
                file = f"{EVIL}.png" if i == 0 else f"img_{i:02d}.png"
                write_image(os.path.join(root, part, name, file), image)
    return str(root)


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("interpret")
    data = make_evil_dataset(base / "ds")
    out = str(base / "run")
    cfg = cnnlab.preset(
        "fast", data=data, epochs=1, batch_size=8, eval_batch_size=5, val_fraction=0.0, threads=1, progress=False
    )
    cnnlab.train_run(cfg, out)
    return out, data


def test_top_loss_rows_orders_by_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # losses: 0.127, 2.127, 0.693, 2.127, 0.127; ties keep the earlier row first
    assert top_loss_rows(logits, labels, 3).tolist() == [1, 3, 2]
    assert top_loss_rows(logits, labels, 10).tolist() == [1, 3, 2, 0, 4]


def test_confused_pairs_are_the_largest_off_diagonal_cells():
    confusion = [[5, 2, 0], [4, 1, 2], [0, 0, 9]]
    pairs = confused_pairs(confusion, ["a", "b", "c"], limit=3)
    assert [(p.true_class, p.predicted_class, p.count) for p in pairs] == [("b", "a", 4), ("a", "b", 2), ("b", "c", 2)]
    assert confused_pairs([[3, 0], [0, 3]], ["a", "b"]) == []  # no mistakes, no pairs
    assert confusion[0][0] == 5  # the caller's matrix is left as it was


def test_split_root_names_files_or_none_for_cifar_batches(tmp_path):
    folder = write_cifar(str(tmp_path / "cifar-10-batches-py"))
    assert split_root(load_dataset(folder, val_fraction=0.0, progress=False), "test") is None
    data = make_evil_dataset(tmp_path / "ds")
    dataset = load_dataset(data, val_fraction=0.0, progress=False)
    assert split_root(dataset, "test") == os.path.join(os.path.abspath(data), "test")
    assert os.path.isfile(os.path.join(split_root(dataset, "test"), dataset.test.files[0]))


def test_top_losses_agree_with_the_runs_evaluation(evil_run):
    run, data = evil_run
    result = interpret_run(run, top=5)
    evaluated = cnnlab.evaluate_run(run)
    assert result.split == "test" and result.n == 12 == evaluated["n"]
    assert result.accuracy == evaluated["accuracy"]
    losses = [item.loss for item in result.top_losses]
    assert len(losses) == 5 and losses == sorted(losses, reverse=True)
    for item in result.top_losses:
        assert os.path.isfile(item.file) and os.path.dirname(os.path.dirname(item.file)) == os.path.join(data, "test")
        assert os.path.basename(os.path.dirname(item.file)) == item.true_class
        assert math.isclose(item.true_probability, math.exp(-item.loss), rel_tol=1e-4)
        assert item.predicted_probability >= item.true_probability
    mistakes = sum(sum(row) - row[i] for i, row in enumerate(evaluated["confusion"]))
    assert sum(p.count for p in result.confused) == mistakes
    pics = result.pictures
    assert pics.images.shape == (5, 32, 32, 3) and pics.predicted_cams.shape == pics.true_cams.shape == (5, 32, 32)
    assert result.cam_layer == "groups"


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.sources, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.sources += [value for name, value in attrs if name in ("src", "href")]
        assert not any(name.startswith("on") for name, _ in attrs), attrs

    def handle_data(self, data):
        self.text.append(data)


def test_page_shows_markup_names_as_text_and_loads_nothing(evil_run, tmp_path):
    run, _ = evil_run
    result = interpret_run(run, top=12)
    json_path, html_path = write_interpretation(result, str(tmp_path / "out"))
    page = open(html_path, encoding="utf-8").read()
    parser = Tags()
    parser.feed(page)
    assert parser.tags.count("img") == 3 * 12  # the image and two maps per card; the names made no tag
    assert "script" not in parser.tags and "link" not in parser.tags
    assert all(src.startswith("data:image/png;base64,") for src in parser.sources) and len(parser.sources) == 36
    text = "".join(parser.text)
    assert f"{EVIL}.png" in text and f"true {EVIL}" in text  # the file and the class shown as text
    assert EVIL not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    saved = json.load(open(json_path))
    assert [item["file"] for item in saved["top_losses"]] == [item.file for item in result.top_losses]
    assert {item["true_class"] for item in saved["top_losses"]} == {EVIL, "plain"}
    assert "pictures" not in saved


def test_a_failed_render_writes_nothing(evil_run, tmp_path, monkeypatch):
    run, _ = evil_run
    result = interpret_run(run, top=2)

    def broken(_result):
        raise RuntimeError("render failed")

    monkeypatch.setattr("cnnlab.interpret.render_html", broken)
    with pytest.raises(RuntimeError):
        write_interpretation(result, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_cli_interpret_and_its_errors(evil_run, tmp_path, capsys):
    run, _ = evil_run
    out = tmp_path / "page"
    assert main(["interpret", run, "--top", "3", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["interpret.html", "interpret.json"]
    assert len(json.load(open(out / "interpret.json"))["top_losses"]) == 3
    capsys.readouterr()
    assert main(["interpret", run, "--top", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --top 0: give a number of images of at least 1"
    assert main(["interpret", run, "--cam-layer", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --cam-layer 'nope': no such module in FastNet") and "\n" not in err


def test_predict_explain_writes_one_picture_per_readable_image(evil_run, tmp_path, capsys):
    run, data = evil_run
    image = os.path.join(data, "test", "plain", "img_01.png")
    (tmp_path / "broken.png").write_bytes(b"nope")
    out = tmp_path / "cams"
    code = main(["predict", run, image, str(tmp_path / "broken.png"), "--explain", str(out)])
    assert code == 2  # the unreadable file is reported, the other explained
    assert os.listdir(out) == ["0000_img_01_cam.png"]
    picture = np.asarray(Image.open(out / "0000_img_01_cam.png"))
    assert picture.shape == (128 + 20, 3 * 128, 3)  # the image, then the maps of the two most probable classes
    strips = [picture[128:, k * 128 : (k + 1) * 128] for k in range(3)]  # each panel's caption
    assert all((strip < 128).any() for strip in strips)  # text drawn in each
    assert not np.array_equal(strips[1], strips[2])  # the two classes named apart
    assert "wrote 1 Grad-CAM picture(s)" in capsys.readouterr().err


def test_a_caption_is_cut_to_its_panel_and_takes_any_name():
    from cnnlab.explain import captioned

    panel = np.zeros((8, 64, 3), dtype=np.uint8)
    short, long = captioned(panel, "cat 93%"), captioned(panel, "a very long class name " * 5 + "93%")
    assert short.shape == long.shape == (28, 64, 3)
    assert (long[8:, 60:] == 255).all()  # the margin stays white: the text was cut to the panel
    assert (captioned(panel, EVIL + " 雪 ☃")[8:] < 128).any()


def test_a_caption_without_freetype_takes_any_name(monkeypatch):
    from PIL import ImageFont

    from cnnlab.explain import captioned

    monkeypatch.setattr(ImageFont, "load_default", lambda size=None: ImageFont.load_default_imagefont())
    panel = np.zeros((8, 64, 3), dtype=np.uint8)
    cut = captioned(panel, "雪 ☃ a very long class name " * 3)
    assert cut.shape == (28, 64, 3) and (cut[8:] < 128).any() and (cut[8:, 60:] == 255).all()


def test_predict_prints_its_answers_before_the_note_on_the_pictures(evil_run, tmp_path, monkeypatch):
    run, data = evil_run
    image = os.path.join(data, "test", "plain", "img_01.png")
    terminal = io.StringIO()  # stdout and stderr in the order printed, as a terminal shows them
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["predict", run, image, "--explain", str(tmp_path / "cams")]) == 0
    lines = terminal.getvalue().splitlines()
    assert lines[0].startswith(f"{image}: ") and lines[-1] == f"wrote 1 Grad-CAM picture(s) to {tmp_path / 'cams'}"


def test_html_without_pictures_still_escapes(evil_run):
    run, _ = evil_run
    result = interpret_run(run, top=1)
    result.pictures = None
    page = render_html(result)
    assert EVIL not in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_page_renders_in_headless_chromium_with_the_names_as_text(evil_run, tmp_path):
    from playwright.sync_api import sync_playwright

    run, _ = evil_run
    _, html_path = write_interpretation(interpret_run(run, top=12), str(tmp_path / "out"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            dialogs, requests = [], []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(pathlib.Path(html_path).as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
            text = page.evaluate("document.body.innerText")
        finally:
            browser.close()
    assert widths == [96] * 36  # every picture decoded under the page's Content-Security-Policy
    assert dialogs == [] and f"{EVIL}.png" in text and f"true {EVIL}" in text
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
