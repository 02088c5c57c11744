"""Reports from saved results: sections, self-containment, a real browser, the study's file names."""
import os
import pathlib
import re
import shutil

import pytest

from cnnlab import preset, train_run
from cnnlab.cli import main
from cnnlab.report import build_report
from conftest import ROOT, SWEEP_FLAGS, make_dataset

TINY = SWEEP_FLAGS
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def cifar_run(cifar_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report") / "run")
    train_run(preset("fast", data=cifar_root, subset=1000, epochs=2, batch_size=128, progress=False), out)
    return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-sweep")
    make_dataset(root / "ds", 30)
    out = str(root / "sweep")
    assert main(["sweep", "--data", str(root / "ds"), "--grid", "batch_size=8,16", "--grid", "epochs=1,2",
                 "--seeds", "3", "--out", out, *TINY]) == 0
    return out


def html_of(path):
    return pathlib.Path(path).read_text(encoding="utf-8")


def test_run_report_has_the_study_sections(cifar_run):
    md_path, html_path = build_report(cifar_run)
    md = pathlib.Path(md_path).read_text()
    for heading in ("## Configuration", "## Data", "## Model", "## Training", "## Evaluation"):
        assert heading in md
    assert "Found 1000 images belonging to 10 classes.  (training)" in md and "Total params: 295,992" in md
    assert re.search(r"\*\*Test accuracy: \d+\.\d\d%\*\* on 1000 images", md)
    for name in ("samples.png", "acc_plot.png", "loss_plot.png", "confusion.png", "misclassified.png"):
        assert f"report_files/{name}" in md and os.path.getsize(os.path.join(cifar_run, "report_files", name)) > 0
    page = html_of(html_path)
    assert "<script" not in page and "http://" not in page and "https://" not in page and "@import" not in page
    assert page.count('src="data:image/png;base64,') == 5


def test_sweep_report_states_conclusions_from_the_data(sweep_dir):
    md_path, _ = build_report(sweep_dir)
    md = pathlib.Path(md_path).read_text()
    assert "## Comparison" in md and "## Conclusion" in md and "heatmap.png" in md
    assert "Chosen on validation accuracy: **" in md and "n=3 seeds" in md
    assert ("Significantly worse" in md) or ("Not distinguishable" in md)
    assert "## The chosen configuration:" in md
    for name in ("batch_8_epoch_1_acc_plot.jpg", "batch_8_epoch_2_loss_plot.jpg"):
        assert os.path.exists(os.path.join(sweep_dir, "runs", "batch_size-8_epochs-2_seed-0", name))


def test_report_refuses_unfinished_runs(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert main(["report", str(tmp_path / "half")]) == 2
    assert "incomplete" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
@pytest.mark.parametrize("which", ["run", "sweep"])
def test_report_renders_in_headless_chromium(which, cifar_run, sweep_dir):
    from playwright.sync_api import sync_playwright

    target = cifar_run if which == "run" else sweep_dir
    _, html_path = build_report(target)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"report-{which}.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(pathlib.Path(html_path).as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
            tables = page.evaluate("document.querySelectorAll('table').length")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert widths and all(w > 0 for w in widths), widths
    assert tables >= 2
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
