"""Reports from saved results: sections, self-containment, a real browser, the study's file names."""
import os
import pathlib
import re
import shutil

import pytest
import scipy.stats

from cnnlab import preset, runs, train_run
from cnnlab.cli import main
from cnnlab.report import build_report
from cnnlab.sweep import cell_name, create_sweep, open_study, results, save_results
from conftest import ROOT, SWEEP_FLAGS, make_dataset, make_folder

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


@pytest.fixture(scope="module")
def seven_class_run(tmp_path_factory):
    """A tiny run over 7 classes (so top-5 accuracy applies), 2 epochs."""
    root = tmp_path_factory.mktemp("report-seven")
    classes = tuple("abcdefg")
    make_folder(root / "ds" / "train", classes=classes, per_class=12)
    make_folder(root / "ds" / "test", classes=classes, per_class=4, seed=1)
    out = str(root / "run")
    assert main(["train", "--data", str(root / "ds"), "--out", out, "--epochs", "2", *TINY]) == 0
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


def test_run_report_shows_balanced_accuracy_macro_f1_and_the_class_table(seven_class_run):
    md = pathlib.Path(build_report(seven_class_run)[0]).read_text()
    test = runs.read_json(os.path.join(seven_class_run, runs.METRICS))["test"]
    assert (f"**Balanced accuracy: {100 * test['balanced_accuracy']:.2f}%, macro-F1: {test['macro_f1']:.4f}**, "
            f"top-5 accuracy {100 * test['top5_accuracy']:.2f}%") in md
    rows = [line for line in md.splitlines() if line.startswith("| class | precision")]
    assert rows == ["| class | precision | recall | F1 | support |"]
    for name, c in test["per_class"].items():
        assert f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | 4 |" in md
    history = runs.read_json(os.path.join(seven_class_run, runs.HISTORY_JSON))
    assert "| epoch | loss | accuracy | val_loss | val_accuracy | val_balanced_accuracy | val_macro_f1 | time_s |" in md
    assert f"| {history[-1]['val_balanced_accuracy']:.4f} | {history[-1]['val_macro_f1']:.4f} |" in md


def test_evaluate_prints_the_figures_and_the_class_table(seven_class_run, capsys):
    assert main(["evaluate", seven_class_run]) == 0
    out = capsys.readouterr().out.splitlines()
    test = runs.read_json(os.path.join(seven_class_run, runs.METRICS))["test"]  # the same model on the same split
    assert out[:5] == [f"accuracy: {100 * test['accuracy']:.2f}%",
                       f"balanced accuracy: {100 * test['balanced_accuracy']:.2f}%",
                       f"macro-F1: {test['macro_f1']:.4f}", f"top-5 accuracy: {100 * test['top5_accuracy']:.2f}%",
                       f"loss: {test['loss']:.4f}  (28 images, test)"]
    assert out[5].split() == ["class", "precision", "recall", "f1", "support"]
    assert [line.split() for line in out[6:]] == [
        [name, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", "4"]
        for name, c in test["per_class"].items()]


def test_sweep_report_states_conclusions_from_the_data(sweep_dir):
    md_path, _ = build_report(sweep_dir)
    md = pathlib.Path(md_path).read_text()
    assert "## Comparison" in md and "## Conclusion" in md and "heatmap.png" in md
    assert "Chosen on validation accuracy: **" in md and "n=3 seeds" in md
    assert "## The chosen configuration:" in md
    for name in ("batch_8_epoch_1_acc_plot.jpg", "batch_8_epoch_2_loss_plot.jpg"):
        assert os.path.exists(os.path.join(sweep_dir, "runs", "batch_size-8_epochs-2_seed-0", name))


def known_sweep(out, val_by_cell):
    """A sweep over lr whose trials finished with the given validation accuracies (one per seed)."""
    import optuna

    grid = {"lr": list(val_by_cell)}
    create_sweep(out, preset("fast"), grid, seeds=3)
    study = open_study(out)
    for lr, values in val_by_cell.items():
        for seed, value in enumerate(values):
            study.add_trial(optuna.trial.create_trial(value=value, user_attrs={
                "cell": cell_name({"lr": lr}), "seed": seed, "test_accuracy": value - 0.01, "train_time_s": 1.0}))
    save_results(out, results(out))
    md_path, _ = build_report(out)
    return pathlib.Path(md_path).read_text()


BEST, WORSE, SAME = [0.90, 0.91, 0.92], [0.86, 0.88, 0.87], [0.89, 0.92, 0.90]  # validation accuracy of 3 seeds


@pytest.mark.parametrize("arrangement", [{0.01: WORSE, 0.1: BEST, 0.5: SAME}, {0.01: SAME, 0.1: WORSE, 0.5: BEST}])
def test_sweep_report_states_the_verdicts_of_known_results(tmp_path, arrangement):
    p_worse, p_same = (float(scipy.stats.ttest_ind(BEST, other, equal_var=False).pvalue) for other in (WORSE, SAME))
    assert 0.001 < p_worse < 0.01 and p_same > 0.5  # neither verdict is a close call
    # Holm over the 2 comparisons: the smaller p doubled, the larger max(itself, that) -- here itself
    p_worse = min(1.0, 2 * p_worse)
    cell = {id(values): f"lr={lr}" for lr, values in arrangement.items()}
    best, worse, same = cell[id(BEST)], cell[id(WORSE)], cell[id(SAME)]
    md = known_sweep(str(tmp_path / "sweep"), arrangement)
    verdicts = {r["cell"]: r["verdict"] for r in runs.read_json(str(tmp_path / "sweep" / "results.json"))["rows"]}
    assert verdicts == {best: "best (on validation)", worse: f"worse than best (p={p_worse:.3f})",
                        same: f"not distinguishable from best (p={p_same:.2f})"}
    table = [line for line in md.splitlines() if line.startswith("| lr=")]
    assert [(line.split(" | ")[0], line.split(" | ")[-1]) for line in table] == \
        [(f"| {name}", f"{verdicts[name]} |") for name in ("lr=0.01", "lr=0.1", "lr=0.5")]
    lines = md.splitlines()
    assert any(line.startswith(f"Chosen on validation accuracy: **{best}**, 91.00 [") for line in lines)
    test = "Welch's t-test on validation accuracy, Holm-corrected for 2 comparisons"
    assert (f"Significantly worse than the chosen cell ({test}, p < 0.05): {worse} (87.00%, p={p_worse:.3g}).") in lines
    assert (f"Not distinguishable from the chosen cell with 3 seeds ({test}, p >= 0.05): {same} (90.33%, "
            f"p={p_same:.2f}). The data do not show that the chosen cell is better than these.") in lines


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
