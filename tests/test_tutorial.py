"""docs/tutorial.md runs as written: its commands, read from the page by tools/tutorial.py (which made the output
the page shows), run in turn in an empty folder, with only these differences:
- `cnnlab data get cifar10 DIR` (170 MB from the network) makes DIR a small CIFAR-10 look-alike instead: the ten
  classes, 10 training and 3 test images each of 16x16 pixels, and an image at every path of it the page names;
- every training is made tiny by TINY_TRAINING, appended (the last value of a flag wins);
- the set-up (git, venv, pip) is not run: this test runs in the installed environment.
And the page's outputs are those of the blocks above them (`tools/tutorial.py --check`)."""

import re
import sys

import numpy as np
from conftest import ROOT, make_folder, write_image

sys.path.insert(0, str(ROOT / "tools"))
import tutorial  # noqa: E402  (a script of tools/, not a package)

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TINY_TRAINING = ("--epochs", "1", "--batch-size", "8", "--threads", "1")


def look_alike(named: set[str]):
    """Makes `cnnlab data get`'s folder: CIFAR-10's classes in small, and the files the page names in it."""

    def make(folder):
        make_folder(folder / "train", CIFAR_CLASSES, per_class=10)
        make_folder(folder / "test", CIFAR_CLASSES, per_class=3, seed=1)
        rng = np.random.default_rng(2)
        for path in named:
            write_image(str(folder / path), rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))

    return make


def test_the_page_shows_the_output_of_its_own_blocks():
    assert tutorial.main(["--check"]) == 0, "run python tools/tutorial.py DATA"


def test_the_tutorial_runs_as_written(tmp_path):
    page = tutorial.PAGE.read_text(encoding="utf-8")
    found = tutorial.blocks(page)
    assert [b.commands()[0][:2] for b in found if b.output] == [
        ["cnnlab", "data"],
        ["cnnlab", "data"],
        ["cnnlab", "train"],
        ["cnnlab", "evaluate"],
        ["cnnlab", "interpret"],
        ["cnnlab", "report"],
        ["cnnlab", "predict"],
        ["cnnlab", "export"],
        ["python", "-c"],
    ], "the tour's steps changed: check this test still walks what the page says"
    name = tutorial.data_name(found)
    named = {path[len(name) + 1 :] for path in re.findall(rf"{re.escape(name)}/[\w/.-]+\.png", page)}
    folder = tmp_path / "tour"
    folder.mkdir()
    outputs = tutorial.walk_page(page, tutorial.Walk(folder, look_alike(named), TINY_TRAINING), log=lambda _: None)
    cleaned = {line: tutorial.clean(text, folder, str(folder / name), name) for line, text in outputs.items()}
    for block in found:
        if block.output:  # each step shown prints something, with no progress bar and no path of this machine
            assert cleaned[block.line] and "\r" not in outputs[block.line], (block.line, outputs[block.line])
            assert str(tmp_path) not in cleaned[block.line] and str(ROOT) not in cleaned[block.line]
    assert (folder / "runs" / "tour" / "report.html").exists() and (folder / "tour.onnx").exists()
    tutorial.pictures(found, folder, tmp_path)
    assert (tmp_path / tutorial.CURVES).exists() and (tmp_path / tutorial.CAMS).exists()
    assert not [p for p in tutorial.check(tutorial.render(page, cleaned)) if "not the block above's" in p]


def test_an_edited_command_makes_its_output_stale():
    page = tutorial.PAGE.read_text(encoding="utf-8")
    edited = page.replace("--epochs 4 --out runs/tour", "--epochs 5 --out runs/tour", 1)  # the train command
    assert edited != page and any("is not the block above's" in p for p in tutorial.check(edited))
