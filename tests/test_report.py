"""Reports from saved results: sections, self-containment, a real browser, the study's file names."""

import os
import pathlib
import re
import shutil

import numpy as np
import pytest
import scipy.stats
from conftest import ROOT, SWEEP_FLAGS, make_dataset, make_folder

from cnnlab import preset, runs, train_run
from cnnlab import report as report_module
from cnnlab.cli import main
from cnnlab.report import build_report
from cnnlab.studies import open_study
from cnnlab.sweep import cell_name, create_sweep, results, save_results

TINY = SWEEP_FLAGS
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-sweep")
    make_dataset(root / "ds", 30)
    out = str(root / "sweep")
    assert (
        main(
            [
                "sweep",
                "--data",
                str(root / "ds"),
                "--grid",
                "batch_size=8,16",
                "--grid",
                "epochs=1,2",
                "--seeds",
                "3",
                "--out",
                out,
                *TINY,
            ]
        )
        == 0
    )
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


RUN_SECTIONS = ["Results", "Settings", "Data", "Model", "Training", "Evaluation", "Why it fails", "Full configuration"]


def test_run_report_has_the_study_sections(cifar_run):
    md_path, html_path = build_report(cifar_run)
    md = pathlib.Path(md_path).read_text()
    assert [line[3:] for line in md.splitlines() if line.startswith("## ")] == RUN_SECTIONS
    assert "Found 1000 images belonging to 10 classes.  (training)" in md and "Total params: 295,992" in md
    assert re.search(r"\*\*Test accuracy: \d+\.\d\d%\*\* on 1000 images", md)
    for name in (
        "samples.png",
        "acc_plot.png",
        "loss_plot.png",
        "reliability.png",
        "confusion.png",
        "misclassified.png",
    ):
        assert f"report_files/{name}" in md and os.path.getsize(os.path.join(cifar_run, "report_files", name)) > 0
    page = html_of(html_path)
    assert "<script" not in page and "http://" not in page and "https://" not in page and "@import" not in page
    assert page.count('src="data:image/png;base64,') == 6
    cal = runs.read_json(os.path.join(cifar_run, runs.METRICS))["test"]["calibrated"]
    assert f"| calibrated | {cal['temperature']:.3f} | {100 * cal['ece']:.2f}% |" in md  # the reliability table


def test_run_report_opens_with_the_test_figures_then_the_settings_that_differ_from_the_preset(seven_class_run):
    md = pathlib.Path(build_report(seven_class_run)[0]).read_text()
    blocks = [block for block in md.split("\n\n") if block.strip()]
    test = runs.read_json(os.path.join(seven_class_run, runs.METRICS))["test"]
    assert blocks[1:3] == [
        "## Results",
        f"**Test accuracy: {100 * test['accuracy']:.2f}%** on 28 images " + blocks[2][blocks[2].index("(loss") :],
    ]
    results = md[md.index("## Results") : md.index("## Settings")]
    assert [
        name for name in ("acc_plot.png", "loss_plot.png", "confusion.png") if f"report_files/{name}" in results
    ] == [
        "acc_plot.png",
        "loss_plot.png",
        "confusion.png",
    ]
    saved = runs.read_json(os.path.join(seven_class_run, runs.CONFIG))["config"]
    fast = preset("fast").to_dict()
    settings = md[md.index("## Settings") : md.index("## Data")]
    assert "differ from the `fast` preset" in settings and "| key | value | fast preset |" in settings
    shown = [line.split(" | ")[0][2:] for line in settings.splitlines() if line.startswith("| ")][1:]
    assert shown == [k for k, v in saved.items() if v != fast[k]]
    assert {"data", "epochs", "batch_size", "eval_batch_size", "threads"} <= set(shown)
    assert "| epochs | 2 | 7 |" in settings and "| lr | 0.05 | 0.4 |" in settings and "| momentum |" not in settings
    full = md[md.index("## Full configuration") :]  # every setting, folded
    assert (
        full.count("\n| ") == len(saved) + 1 and "<details><summary>" in full and full.rstrip().endswith("</details>")
    )


@pytest.mark.parametrize(
    "cfg, name, rows",
    [
        (preset("fast", lr=0.5, data="d"), "fast", [["data", "d", "-"], ["lr", "0.5", "0.4"]]),
        (preset("seed", epochs=3), "seed", [["epochs", "3", "20"]]),
        (preset("fast94"), "fast94", []),
    ],
)
def test_the_settings_shown_are_those_that_differ_from_the_nearest_preset(cfg, name, rows):
    assert report_module.nearest_preset(cfg) == (name, rows)


def test_run_report_shows_balanced_accuracy_macro_f1_and_the_class_table(seven_class_run):
    md = pathlib.Path(build_report(seven_class_run)[0]).read_text()
    test = runs.read_json(os.path.join(seven_class_run, runs.METRICS))["test"]
    assert (
        f"**Balanced accuracy: {100 * test['balanced_accuracy']:.2f}%, macro-F1: {test['macro_f1']:.4f}**, "
        f"top-5 accuracy {100 * test['top5_accuracy']:.2f}%"
    ) in md
    rows = [line for line in md.splitlines() if line.startswith("| class | precision")]
    assert rows == ["| class | precision | recall | F1 | support |"]
    for name, c in test["per_class"].items():
        assert f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | 4 |" in md
    history = runs.read_json(os.path.join(seven_class_run, runs.HISTORY_JSON))
    assert "| epoch | loss | accuracy | val_loss | val_accuracy | val_balanced_accuracy | val_macro_f1 | time_s |" in md
    assert f"| {history[-1]['val_balanced_accuracy']:.4f} | {history[-1]['val_macro_f1']:.4f} |" in md
    # the curves' loss named (the fast preset's: smoothed, no class weights on balanced classes)
    assert "loss and val_loss: cross-entropy, label smoothing 0.2; val_nll (history.json): plain cross-entropy." in md


def test_a_run_saved_before_val_nll_still_reports(seven_class_run, tmp_path):
    import shutil

    old = str(tmp_path / "old")
    shutil.copytree(seven_class_run, old)
    history = runs.read_json(os.path.join(old, runs.HISTORY_JSON))
    runs.save_history(old, [{k: v for k, v in r.items() if k not in ("val_nll", "loss_name")} for r in history])
    md = pathlib.Path(build_report(old)[0]).read_text()
    assert "| epoch | loss | accuracy | val_loss | val_accuracy | val_balanced_accuracy | val_macro_f1 | time_s |" in md
    assert "loss and val_loss:" not in md  # an old run's val_loss was plain cross-entropy: nothing claimed


def test_evaluate_prints_the_figures_and_the_class_table(seven_class_run, capsys):
    assert main(["evaluate", seven_class_run]) == 0
    out = capsys.readouterr().out.splitlines()
    test = runs.read_json(os.path.join(seven_class_run, runs.METRICS))["test"]  # the same model on the same split
    assert out[:6] == [
        f"accuracy: {100 * test['accuracy']:.2f}%",
        f"balanced accuracy: {100 * test['balanced_accuracy']:.2f}%",
        f"macro-F1: {test['macro_f1']:.4f}",
        f"top-5 accuracy: {100 * test['top5_accuracy']:.2f}%",
        f"loss: {test['loss']:.4f}  (28 images, test)",
        f"calibration (raw probabilities): ECE {100 * test['ece']:.2f}%, NLL {test['loss']:.4f}, "
        f"Brier {test['brier']:.4f}, mean confidence {100 * test['mean_confidence']:.2f}%",
    ]
    cal = test["calibrated"]  # the temperature fitted on the 7 validation images
    assert out[6] == (
        f"calibrated (temperature {cal['temperature']:.3f}, fitted on validation): ECE {100 * cal['ece']:.2f}%, "
        f"NLL {cal['nll']:.4f}, Brier {cal['brier']:.4f}, mean confidence {100 * cal['mean_confidence']:.2f}%"
    )
    assert out[7] == (
        f"a perfectly calibrated model would show an ECE of about {100 * cal['ece_floor']:.2f}% on these 28 images "
        "(15 bins): an ECE near that cannot be told from perfect"
    )
    assert out[8].split() == ["class", "precision", "recall", "f1", "support"]
    assert [line.split() for line in out[9:]] == [
        [name, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", "4"]
        for name, c in test["per_class"].items()
    ]


def test_sweep_report_states_conclusions_from_the_data(sweep_dir):
    md_path, _ = build_report(sweep_dir)
    md = pathlib.Path(md_path).read_text()
    headings = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert headings[0] == "Results" and headings[-3:] == ["Design", "Base configuration", "Full configuration"]
    results = md[md.index("## Results") : md.index("## The chosen")]
    assert results.split("\n\n")[1].startswith("Chosen on validation accuracy: **") and "n=3 seeds" in results
    assert (
        "| cell | n | validation accuracy % [95% CI] | test acc. % [95% CI] |" in results and "heatmap.png" in results
    )
    base = md[md.index("## Base configuration") : md.index("## Full configuration")]
    assert (
        "differ from the `fast` preset" in base and "| lr | 0.05 | 0.4 |" in base and "| schedule | constant |" in base
    )
    assert "| momentum |" not in base  # the fast preset's
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
            study.add_trial(
                optuna.trial.create_trial(
                    value=value,
                    user_attrs={
                        "cell": cell_name({"lr": lr}),
                        "seed": seed,
                        "test_accuracy": value - 0.01,
                        "train_time_s": 1.0,
                    },
                )
            )
    save_results(out, results(out))
    md_path, _ = build_report(out)
    return pathlib.Path(md_path).read_text()


BEST, WORSE, SAME = [0.90, 0.91, 0.92], [0.86, 0.88, 0.87], [0.89, 0.92, 0.90]  # validation accuracy of 3 seeds


@pytest.mark.parametrize("arrangement", [{0.01: WORSE, 0.1: BEST, 0.5: SAME}, {0.01: SAME, 0.1: WORSE, 0.5: BEST}])
def test_sweep_report_states_the_verdicts_of_known_results(tmp_path, arrangement):
    # The 3 cells share seeds 0-2: a two-way layout (cells x seeds), its residual variance on 2 x 2 df,
    # and Tukey's studentized range over the 3 cells (the best was chosen on these same runs).
    matrix = np.array([BEST, WORSE, SAME])
    residual = matrix - matrix.mean(1, keepdims=True) - matrix.mean(0, keepdims=True) + matrix.mean()
    scale = np.sqrt((residual**2).sum() / 4 / 3)
    p_worse, p_same = (
        float(scipy.stats.studentized_range.sf((np.mean(BEST) - np.mean(other)) / scale, 3, 4))
        for other in (WORSE, SAME)
    )
    assert 0.001 < p_worse < 0.01 and p_same > 0.5  # neither verdict is a close call
    cell = {id(values): f"lr={lr}" for lr, values in arrangement.items()}
    best, worse, same = cell[id(BEST)], cell[id(WORSE)], cell[id(SAME)]
    md = known_sweep(str(tmp_path / "sweep"), arrangement)
    verdicts = {r["cell"]: r["verdict"] for r in runs.read_json(str(tmp_path / "sweep" / "results.json"))["rows"]}
    assert verdicts == {
        best: "best (on validation)",
        worse: f"worse than best (adj. p={p_worse:.3f})",
        same: f"not distinguishable from best (adj. p={p_same:.2f})",
    }
    table = [line for line in md.splitlines() if line.startswith("| lr=")]
    assert [(line.split(" | ")[0], line.split(" | ")[-1]) for line in table] == [
        (f"| {name}", f"{verdicts[name]} |") for name in ("lr=0.01", "lr=0.1", "lr=0.5")
    ]
    lines = md.splitlines()
    assert any(line.startswith(f"Chosen on validation accuracy: **{best}**, 91.00 [") for line in lines)
    test = (
        "on validation accuracy, adjusted for choosing the best: Tukey's studentized range over the 3 cells "
        "(the best chosen on the same runs), paired on the 3 seeds the cells share (two-way layout), df=4"
    )
    assert (
        f"Significantly worse than the chosen cell ({test}, p < 0.05): {worse} (87.00%, adj. p={p_worse:.3g})." in lines
    )
    assert (
        f"Not distinguishable from the chosen cell with 3 seeds ({test}, p >= 0.05): {same} (90.33%, "
        f"adj. p={p_same:.2f}). The data do not show that the chosen cell is better than these."
    ) in lines


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


def first_screen(html_path, width=1280, height=720):
    """What a browser window of width x height shows of a page before scrolling: the bottom edge (px) of the test
    accuracy line and of the accuracy curves, and whether the curves' picture loaded."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(pathlib.Path(html_path).as_uri())
            page.wait_for_load_state("load")
            text = page.locator("p", has_text="Test accuracy:").bounding_box()
            curves = page.locator('img[alt^="accuracy per epoch"]')
            box, loaded = curves.bounding_box(), curves.evaluate("i => i.complete && i.naturalWidth > 0")
            page.screenshot(path=str(ARTIFACTS / "report-first-screen.png"))
        finally:
            browser.close()
    return text["y"] + text["height"], box["y"] + box["height"], loaded


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_first_screen_of_a_run_report_shows_the_test_accuracy_and_the_curves(seven_class_run):
    _, html_path = build_report(seven_class_run)
    ARTIFACTS.mkdir(exist_ok=True)
    text_bottom, curves_bottom, loaded = first_screen(html_path)
    assert loaded and text_bottom < curves_bottom <= 720, (text_bottom, curves_bottom)


# --- the run's "Why it fails" section, from cnnlab interpret's saved interpret.json -----------------------


def interpretation(data_root, losses=12):
    """interpret.json as `cnnlab interpret` writes it, with known rows: file i in cat or dog, predicted the other."""
    top = [
        {
            "row": i,
            "file": os.path.join(data_root, "test", "cat" if i % 2 else "dog", f"{i:04d}.png"),
            "true_class": "cat" if i % 2 else "dog",
            "predicted_class": "dog" if i % 2 else "cat",
            "predicted_probability": 0.99 - i / 100,
            "true_probability": 0.005,
            "loss": 5.0 - i / 10,
        }
        for i in range(losses)
    ]
    top[3]["file"] = None  # a CIFAR python batch holds no files: the row is shown
    top[5]["file"] = "/elsewhere/test/cat/0005.png"  # interpreted with --data another folder: shown whole
    confused = [
        {"true_class": t, "predicted_class": p, "count": n}
        for t, p, n in (
            ("cat", "dog", 40),
            ("dog", "cat", 30),
            ("a|b", "cat", 9),
            ("cat", "bird", 5),
            ("bird", "dog", 2),
            ("dog", "bird", 1),
        )
    ]
    return {
        "run_dir": "/r",
        "model": "fastnet",
        "split": "test",
        "n": 500,
        "accuracy": 0.8125,
        "tta": True,
        "cam_layer": "groups",
        "top_losses": top,
        "confused": confused,
    }


def section_of(run_dir, data_root="/data/cifar"):
    from cnnlab.report import Report, _interpret_section, render

    report = Report()
    _interpret_section(report, str(run_dir), data_root, "h2")
    md_path, html_path = render(report, str(run_dir))
    return pathlib.Path(md_path).read_text(), html_of(html_path)


def test_interpret_section_shows_saved_top_losses_confused_pairs_and_the_link(tmp_path):
    runs.write_json(str(tmp_path / "interpret.json"), interpretation("/data/cifar"))
    (tmp_path / "interpret.html").write_text("<p>page</p>")
    md, page = section_of(tmp_path)
    lines = md.splitlines()
    assert lines[0] == "## Why it fails"
    assert (
        "From `cnnlab interpret` (interpret.json): the test split's 500 images, accuracy 81.25%; the 10 with the "
        "highest loss of the 12 it saved."
    ) in lines
    rows = [line for line in lines if line.startswith("| ") and line.count(" | ") == 3]
    assert rows[0] == "| file | true class | predicted as | probability |"
    assert rows[1:4] == [
        "| test/dog/0000.png | dog | cat | 99.00% |",
        "| test/cat/0001.png | cat | dog | 98.00% |",
        "| test/dog/0002.png | dog | cat | 97.00% |",
    ]
    assert (
        rows[4] == "| row 3 | cat | dog | 96.00% |"
        and rows[6] == "| /elsewhere/test/cat/0005.png | cat | dog | 94.00% |"
    )
    assert len(rows) == 11 and rows[10] == "| test/cat/0009.png | cat | dog | 90.00% |"  # 10 of the 12
    pairs = [line for line in lines if line.startswith("| ") and line.count(" | ") == 2]
    assert pairs == [
        "| true class | predicted as | images |",
        "| cat | dog | 40 |",
        "| dog | cat | 30 |",
        "| a\\|b | cat | 9 |",
        "| cat | bird | 5 |",
        "| bird | dog | 2 |",
    ]  # the 5 largest
    assert lines[-1].startswith("[interpret.html: every top loss") and lines[-1].endswith("](interpret.html)")
    assert page.count('<a href="interpret.html">') == 1 and "<td>a|b</td>" in page


def test_interpret_section_without_its_page_has_no_link(tmp_path):
    runs.write_json(str(tmp_path / "interpret.json"), interpretation("/data/cifar"))
    md, page = section_of(tmp_path)
    assert "| test/dog/0000.png | dog | cat | 99.00% |" in md and "<a " not in page and "](interpret.html)" not in md


def test_interpret_section_says_how_to_make_it_when_absent(tmp_path):
    md, page = section_of(tmp_path)
    assert md.splitlines() == [
        "## Why it fails",
        "",
        f"`cnnlab interpret {tmp_path}` adds here the images with the "
        "highest loss, the most confused classes and a link to their Grad-CAM maps.",
    ]
    assert "<table>" not in page and "<a " not in page


@pytest.mark.parametrize("content", ["{not json", '{"split": "test"}', '{"top_losses": 3}'])
def test_interpret_section_reports_a_damaged_file_in_one_line(tmp_path, content):
    (tmp_path / "interpret.json").write_text(content)
    md, page = section_of(tmp_path)
    said = [line for line in md.splitlines() if line][1:]
    assert len(said) == 1 and said[0].startswith("interpret.json cannot be read (")
    assert said[0].endswith(f"`cnnlab interpret {tmp_path}` writes it again.") and "<table>" not in page


def test_interpret_section_says_when_the_run_is_newer(tmp_path):
    runs.write_json(str(tmp_path / "interpret.json"), interpretation("/data/cifar"))
    runs.write_json(str(tmp_path / "metrics.json"), {})
    os.utime(tmp_path / "interpret.json", (1_000_000, 1_000_000))  # written before the run's metrics
    md, _ = section_of(tmp_path)
    assert f"It is older than the run's metrics.json: `cnnlab interpret {tmp_path}` brings it up to date." in md
    os.utime(tmp_path / "metrics.json", (999_999, 999_999))
    assert "older" not in section_of(tmp_path)[0]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_links_interpret_in_headless_chromium(tmp_path):
    """A tiny run whose class folder and file are named as markup: interpret, then the report; the browser finds
    the section as text (no injected image), its tables, and follows the link to interpret.html."""
    from playwright.sync_api import sync_playwright
    from test_interpret import EVIL, make_evil_dataset

    data = make_evil_dataset(tmp_path / "ds")
    run = str(tmp_path / "run")
    train_run(
        preset(
            "fast", data=data, epochs=1, batch_size=8, eval_batch_size=5, val_fraction=0.0, threads=1, progress=False
        ),
        run,
    )
    md_path, html_path = build_report(run)
    assert f"`cnnlab interpret {run}` adds here" in pathlib.Path(md_path).read_text()
    assert main(["interpret", run, "--top", "12"]) == 0  # every test image: 10 shown, of both classes
    _, html_path = build_report(run)
    ARTIFACTS.mkdir(exist_ok=True)
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
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(pathlib.Path(html_path).as_uri())
            page.wait_for_load_state("load")
            section = page.locator("h2", has_text="Why it fails")
            section.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "report-interpret.png"))
            headings = page.evaluate("[...document.querySelectorAll('h2')].map(h => h.textContent)")
            after = page.evaluate("""() => {const h = [...document.querySelectorAll('h2')].find(
                h => h.textContent === 'Why it fails'); const out = []; let e = h.nextElementSibling;
                while (e && e.tagName !== 'H2') { out.push(e.tagName + ':' + e.textContent); e = e.nextElementSibling; }
                return out; }""")
            injected = page.evaluate("document.querySelectorAll('img[src=\"x\"]').length")
            page.click('a[href="interpret.html"]')
            page.wait_for_load_state("load")
            landed, title = page.url, page.title()
        finally:
            browser.close()
    assert headings[-2:] == ["Why it fails", "Full configuration"] and injected == 0
    tables = [text for text in after if text.startswith("TABLE:")]
    assert len(tables) == 2 and EVIL in tables[0] and tables[1].startswith("TABLE:true classpredicted as")
    assert after[-1].startswith("P:interpret.html: every top loss")
    assert landed == pathlib.Path(run, "interpret.html").as_uri() and title == "Top losses: run"


def test_the_report_reads_only_the_images_it_shows(cifar_run, monkeypatch):
    """Sample and misclassified images are gathered as the rows shown, never as a copy of the whole split per
    image (which made a report's cost grow with the dataset times the images shown)."""
    from cnnlab.data.dataset import Split

    original, rows = Split.images.fget, []

    def counted(split):
        rows.append(len(split))
        return original(split)

    monkeypatch.setattr(Split, "images", property(counted))
    build_report(cifar_run)
    shown = report_module.SAMPLES_PER_CLASS * 10 + report_module.MISCLASSIFIED_SHOWN
    assert len(rows) == 2 and sum(rows) <= shown, rows


def test_a_class_folder_whose_name_is_not_utf8_is_reported_escaped(tmp_path):
    # training, interpret and data check take such a folder; the report's figures failed on it (matplotlib
    # refuses the surrogate escapes a non-UTF-8 file name decodes to)
    root = tmp_path / "ds"
    make_dataset(root, 12, 2)
    for part in ("train", "test"):
        os.rename(os.path.join(root, part, "c"), os.path.join(os.fsencode(root), part.encode(), b"caf\xe9"))
    out = str(tmp_path / "run")
    assert main(["train", "--data", str(root), "--out", out, "--epochs", "1", *TINY]) == 0
    md_path, html_path = build_report(out)
    page = html_of(html_path)
    assert "caf\\xe9" in page and "confusion.png" in pathlib.Path(md_path).read_text()
