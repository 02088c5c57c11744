"""The study's write-up, generated from what a run or a sweep saved (it never trains).

`build_report(DIR)` writes DIR/report.md (images in DIR/report_files/) and DIR/report.html, a single
self-contained file: images embedded as data URIs, inline CSS, no scripts, no external fonts.
"""

from __future__ import annotations

import html
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from . import runs
from .config import saved_config
from .data.preprocess import input_hw
from .errors import CnnlabError
from .files import printable
from .interpret import HTML_NAME as INTERPRET_HTML
from .interpret import JSON_NAME as INTERPRET_JSON
from .models import count_params, create_model, summary
from .pages import page, png_uri
from .pipeline import load_data
from .plots import image_grid, loss_name, plot_confusion, plot_curves, plot_reliability
from .presets import PRESETS, preset
from .stats import format_interval
from .sweep.planning import cell_name, cells_of
from .sweep.summary import METRIC_NAMES, p_value_note, sample_note

SAMPLES_PER_CLASS, MISCLASSIFIED_SHOWN, SKIPPED_SHOWN = 8, 24, 10
INTERPRET_LOSSES, INTERPRET_PAIRS = 10, 5  # rows of interpret.json shown in the run's report


@dataclass
class Report:
    """A report as a list of blocks: (kind, payload) with kind h1/h2/p/pre/table/details/img/imgs/link."""

    blocks: list[tuple[str, object]] = field(default_factory=list)
    scratch: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="cnnlab-report-"))

    def add(self, kind: str, payload: object) -> None:
        self.blocks.append((kind, payload))

    def image(self, name: str, path: str, alt: str) -> None:
        with open(path, "rb") as fh:
            self.add("img", (name, fh.read(), alt))

    def images(self, shown: list[tuple[str, str, str]]) -> None:
        """(name, path, alt) images side by side (on one line in the HTML)."""
        blocks = []
        for name, path, alt in shown:
            with open(path, "rb") as fh:
                blocks.append((name, fh.read(), alt))
        self.add("imgs", blocks)

    def scratch_path(self, name: str) -> str:
        return os.path.join(self.scratch, name)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


# --- a single run ---------------------------------------------------------------------------------


def _run_sections(report: Report, run_dir: str, title: str | None = None, heading: str = "h2") -> None:
    """A run's report: the results first (test figures, curves, confusion matrix), then the settings that differ
    from the nearest preset, the data, the model, the training and evaluation details, the full configuration."""
    run = runs.load_run(run_dir)
    cfg = saved_config(run["config"])  # with the defaults it was saved under, not today's
    data, history, metrics = run["data"], run["history"], run["metrics"] or {}
    report.add(
        "h1" if heading == "h2" else heading, title or f"cnnlab report: {os.path.basename(os.path.abspath(run_dir))}"
    )
    report.add(heading, "Results")
    _headline(report, cfg, metrics)
    env = run.get("environment", {})
    report.add(
        "p",
        f"Model `{cfg.model}`, seed {run['seed']}, {cfg.epochs} epochs of batch {cfg.batch_size}; "
        f"cnnlab {env.get('cnnlab')} (git {str(env.get('git_commit'))[:10]}), torch {env.get('torch')}, "
        f"{data.get('device')}, {'bf16' if data.get('bf16') else 'fp32'}.",
    )
    curves = [
        (name, os.path.join(run_dir, name), alt)
        for name, alt in (
            ("acc_plot.png", "accuracy per epoch, training vs validation"),
            ("loss_plot.png", "loss per epoch, training vs validation"),
        )
        if os.path.exists(os.path.join(run_dir, name))
    ]
    if curves:
        report.images(curves)
    if metrics.get("test"):
        path = plot_confusion(metrics["test"]["confusion"], data["classes"], report.scratch_path("confusion.png"))
        report.image("confusion.png", path, "confusion matrix of the test images")
    _settings(report, heading, cfg, "Settings")

    dataset = _data_section(report, heading, run_dir, cfg, data)

    report.add(heading, "Model")
    model = create_model(cfg.model, num_classes=len(data["classes"]))
    counts = count_params(model)
    report.add(
        "p",
        f"`{cfg.model}`: {counts['total']:,} parameters ({counts['trainable']:,} trainable, "
        f"{counts['non_trainable']:,} non-trainable).",
    )
    report.add("pre", summary(model, input_hw(data["preprocessing"])))

    _training_section(report, heading, history, metrics)
    _evaluation_section(report, heading, data, metrics, dataset)
    _interpret_section(report, run_dir, cfg.data, heading)
    _full_config(report, heading, cfg)


def _headline(report: Report, cfg, metrics: dict) -> None:
    """The run's test figures, in bold: accuracy, then balanced accuracy and macro-F1."""
    test = metrics.get("test")
    if not test:
        report.add("p", "No test split: the dataset has no test folder.")
        return
    report.add(
        "p",
        f"**Test accuracy: {_pct(test['accuracy'])}** on {test['n']} images (loss {test['loss']:.4f}"
        f"{', flip TTA' if cfg.tta else ''}"
        f"{f' with {cfg.tta_translate}-pixel translations' if cfg.tta and cfg.tta_translate else ''}"
        f"{f' for the least confident {100 * cfg.tta_share:g}% of each batch' if cfg.tta and cfg.tta_share < 1 else ''}).",
    )
    figures = _figures_line(test)
    if figures:
        report.add("p", figures)


def _shown(value: object) -> str:
    return "-" if value == "" else str(value)


def nearest_preset(cfg) -> tuple[str, list[list[str]]]:
    """The preset `cfg` differs least from (a run does not save which preset it began from) and the
    [key, value, preset's value] rows of the keys where they differ, the dataset path included."""
    ours = cfg.to_dict()
    rows = {
        name: [[k, _shown(v), _shown(base[k])] for k, v in ours.items() if v != base[k]]
        for name in PRESETS
        for base in [preset(name).to_dict()]
    }
    name = min(rows, key=lambda n: len(rows[n]))  # ties: the first preset (fast, the default)
    return name, rows[name]


def _settings(report: Report, heading: str, cfg, title: str) -> None:
    name, rows = nearest_preset(cfg)
    report.add(heading, title)
    report.add(
        "p",
        f"The settings that differ from the `{name}` preset (the nearest; the whole configuration is at the end):"
        if rows
        else f"The `{name}` preset, unchanged (the whole configuration is at the end).",
    )
    if rows:
        report.add("table", (["key", "value", f"{name} preset"], rows))


def _full_config(report: Report, heading: str, cfg) -> None:
    report.add(heading, "Full configuration")
    values = cfg.to_dict()
    report.add("details", (f"all {len(values)} settings", (["key", "value"], [[k, str(v)] for k, v in values.items()])))


def _data_section(report: Report, heading: str, run_dir: str, cfg, data: dict):
    """The data's description, what was skipped, and sample images; returns the dataset (None where it
    cannot be read now)."""
    report.add(heading, "Data")
    report.add("pre", "\n".join(f"{line}  ({name})" for name, line in data["found"].items()))
    prep = data["preprocessing"]
    report.add(
        "p",
        f"{len(data['classes'])} classes: {', '.join(data['classes'])}. Images stored at "
        f"{prep['image_size'][0]}x{prep['image_size'][1]}, fed to the model at "
        f"{'x'.join(map(str, input_hw(prep)))} ({prep['interpolation']} resize).",
    )
    for i, line in enumerate(_skipped_lines(run_dir, data)):
        report.add("pre" if i else "p", line)
    dataset = None
    try:
        dataset = load_data(cfg.replace(progress=False))
    except CnnlabError as exc:
        report.add("p", f"Sample images omitted: the dataset could not be read ({exc}).")
    if dataset is not None:
        labels = dataset.train.labels
        picks = [i for c in range(len(dataset.classes)) for i in np.flatnonzero(labels == c)[:SAMPLES_PER_CLASS]]
        path = image_grid(
            list(dataset.train.take(np.asarray(picks, dtype=np.int64)).images),
            [dataset.classes[labels[i]] for i in picks],
            SAMPLES_PER_CLASS,
            report.scratch_path("samples.png"),
            scale=0.9,
        )
        report.image("samples.png", path, "sample training images, one row per class")
    return dataset


def _skipped_lines(run_dir: str, data: dict) -> list[str]:
    """What --skip-bad-images left out (runs.SKIPPED): the count per folder and the first paths."""
    skipped = runs.load_skipped(run_dir)
    if not skipped and not data.get("skipped"):
        return []
    total = sum(len(entries) for entries in skipped.values())
    lines = [
        f"**{total} unreadable image(s) skipped** (--skip-bad-images; all listed in `{runs.SKIPPED}`): "
        + ", ".join(f"{len(entries)} in {folder}" for folder, entries in skipped.items())
        + "."
    ]
    shown = [entry for entries in skipped.values() for entry in entries][:SKIPPED_SHOWN]
    if shown:
        lines.append(
            "\n".join(f"{entry['path']}: {entry['reason']}" for entry in shown)
            + ("\n..." if total > len(shown) else "")
        )
    return lines


def _training_section(report: Report, heading: str, history: list[dict], metrics: dict) -> None:
    report.add(heading, "Training")
    keys = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "time_s"]
    keys = [k for k in keys if any(k in r for r in history) or not k.startswith("val_")]  # older runs lack some
    report.add(
        "table",
        (
            keys,
            [
                ["-" if r.get(k) is None else (f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k])) for k in keys]
                for r in history
            ],
        ),
    )
    if loss_name(history):
        report.add("p", f"loss and val_loss: {loss_name(history)}; val_nll (history.json): plain cross-entropy.")
    report.add(
        "p",
        f"Training time {metrics.get('train_time_s', 0):.1f} s over {len(history)} epochs "
        f"(validation {metrics.get('eval_time_s', 0):.1f} s).",
    )


def _figures_line(test: dict) -> str | None:
    """Balanced accuracy, macro-F1 and top-5 accuracy of a test evaluation (None for a run saved before them)."""
    if "balanced_accuracy" not in test:
        return None
    top5 = f", top-5 accuracy {_pct(test['top5_accuracy'])}" if "top5_accuracy" in test else ""
    return (
        f"**Balanced accuracy: {_pct(test['balanced_accuracy'])}, macro-F1: {test['macro_f1']:.4f}**{top5} "
        "(balanced accuracy: the mean of the classes' recalls; macro-F1: the mean of their F1 scores)."
    )


def _class_table(test: dict) -> tuple[list[str], list[list[str]]]:
    if "per_class" not in test:  # a run saved before per-class precision/recall/F1
        return ["class", "accuracy"], [[c, _pct(a)] for c, a in test["per_class_accuracy"].items()]
    return (
        ["class", "precision", "recall", "F1", "support"],
        [
            [c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", str(v["support"])]
            for c, v in test["per_class"].items()
        ],
    )


def _calibration_part(report: Report, metrics: dict) -> None:
    """The test probabilities' calibration, raw and with the run's temperature, and the reliability diagram."""
    test, fitted = metrics["test"], metrics.get("calibration") or {}
    if "ece" not in test:  # a run saved before calibration figures existed
        return
    rows = [
        ["raw", "1", _pct(test["ece"]), f"{test['loss']:.4f}", f"{test['brier']:.4f}", _pct(test["mean_confidence"])]
    ]
    curves = {"raw": test["reliability"]}
    cal = test.get("calibrated")
    if cal:
        rows.append(
            ["calibrated", f"{cal['temperature']:.3f}", _pct(cal["ece"]), f"{cal['nll']:.4f}", f"{cal['brier']:.4f}",
             _pct(cal["mean_confidence"])]
        )  # fmt: skip
        curves[f"calibrated (T={cal['temperature']:.2f})"] = cal["reliability"]
        how = (
            f"the temperature was fitted on the validation split ({fitted.get('n')} images), never on test; it "
            "divides the logits, so no prediction changes"
        )
    else:
        how = f"uncalibrated: {fitted.get('reason', 'the run has no temperature')}"
    report.add(
        "p",
        f"**Calibration** (does a probability of 0.9 come true 9 times in 10?): test accuracy {_pct(test['accuracy'])}; "
        f"ECE over 15 confidence bins, negative log-likelihood, Brier score and mean top-1 probability; {how}.",
    )
    report.add("table", (["probabilities", "temperature", "ECE", "NLL", "Brier", "mean confidence"], rows))
    path = plot_reliability(curves, report.scratch_path("reliability.png"))
    report.image("reliability.png", path, "reliability diagram of the test images")


def _evaluation_section(report: Report, heading: str, data: dict, metrics: dict, dataset) -> None:
    """The test split in detail: calibration, the class table, the most confused pairs, misclassified images."""
    test = metrics.get("test")
    if not test:
        return
    report.add(heading, "Evaluation")
    _calibration_part(report, metrics)
    report.add("table", _class_table(test))
    confusion = np.array(test["confusion"])
    off = [(confusion[i, j], i, j) for i in range(len(confusion)) for j in range(len(confusion)) if i != j]
    top = sorted(off, reverse=True)[:5]
    report.add(
        "table",
        (
            ["true class", "predicted as", "images", "share of the class"],
            [
                [data["classes"][i], data["classes"][j], str(n), _pct(n / max(1, confusion[i].sum()))]
                for n, i, j in top
                if n > 0
            ],
        ),
    )
    predictions = metrics.get("test_predictions")
    if dataset is not None and dataset.test is not None and predictions and len(predictions) == len(dataset.test):
        wrong = np.flatnonzero(np.asarray(predictions) != dataset.test.labels)[:MISCLASSIFIED_SHOWN]
        if len(wrong):
            names = dataset.classes
            path = image_grid(
                list(dataset.test.take(wrong).images),
                [f"{names[dataset.test.labels[i]]} -> {names[predictions[i]]}" for i in wrong],
                8,
                report.scratch_path("misclassified.png"),
                scale=1.1,
            )
            report.image("misclassified.png", path, "misclassified test images: true -> predicted")


def _shown_file(loss: dict, data_root: str | None) -> str:
    """A top loss's file relative to the run's dataset when it lies inside it; its row for CIFAR batches."""
    file = loss["file"]
    if not file:
        return f"row {loss['row']}"
    if data_root and os.path.abspath(file).startswith(os.path.abspath(data_root) + os.sep):
        return os.path.relpath(file, data_root)
    return file


def _interpret_section(report: Report, run_dir: str, data_root: str | None, heading: str) -> None:
    """Why the model fails, from what `cnnlab interpret` saved in the run (it is not re-run here): the highest
    losses, the most confused pairs and a link to its page; without interpret.json, the command that makes it."""
    report.add(heading, "Why it fails")
    path = os.path.join(run_dir, INTERPRET_JSON)
    if not os.path.exists(path):
        report.add(
            "p",
            f"`cnnlab interpret {run_dir}` adds here the images with the highest loss, the most confused "
            "classes and a link to their Grad-CAM maps.",
        )
        return
    try:
        saved = runs.read_json(path)
        losses = [
            [_shown_file(t, data_root), t["true_class"], t["predicted_class"], _pct(t["predicted_probability"])]
            for t in saved["top_losses"][:INTERPRET_LOSSES]
        ]
        pairs = [[p["true_class"], p["predicted_class"], str(p["count"])] for p in saved["confused"][:INTERPRET_PAIRS]]
        intro = (
            f"From `cnnlab interpret` ({INTERPRET_JSON}): the {saved['split']} split's {saved['n']:,} images, "
            f"accuracy {_pct(saved['accuracy'])}; the {len(losses)} with the highest loss of the "
            f"{len(saved['top_losses'])} it saved."
        )
    except (CnnlabError, KeyError, TypeError, ValueError) as exc:
        report.add(
            "p",
            f"{INTERPRET_JSON} cannot be read ({type(exc).__name__}: {exc}); `cnnlab interpret {run_dir}` "
            "writes it again.",
        )
        return
    metrics = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics) and os.path.getmtime(path) < os.path.getmtime(metrics):
        intro += f" It is older than the run's metrics.json: `cnnlab interpret {run_dir}` brings it up to date."
    report.add("p", intro)
    report.add("table", (["file", "true class", "predicted as", "probability"], losses))
    report.add("p", "The most confused pairs:")
    report.add("table", (["true class", "predicted as", "images"], pairs))
    if os.path.exists(os.path.join(run_dir, INTERPRET_HTML)):
        report.add(
            "link",
            (
                f"{INTERPRET_HTML}: every top loss with the Grad-CAM maps of its predicted and true class",
                INTERPRET_HTML,
            ),
        )


# --- a sweep --------------------------------------------------------------------------------------


def _conclusion(res: dict) -> list[str]:
    """Plain-language statements computed from the results table."""
    rows = {r["cell"]: r for r in res["rows"]}
    best = rows.get(res["best"])
    if best is None:
        return ["No cell has finished yet."]
    metric = METRIC_NAMES.get(res.get("select_metric", "val_accuracy"), "accuracy")
    seeds = len(res.get("seed_values") or []) or res["seeds"]
    runs_of = f"results: {res['folds']} folds x {seeds} seeds" if res.get("folds") else "seeds"
    lines = [
        f"Chosen on validation {metric}: **{best['cell']}**, {format_interval(best['val'])}% (mean [95% CI], "
        f"n={best['val']['n']} {runs_of}; `{res.get('select_metric', 'val_accuracy')}`). Its test accuracy, "
        f"reported once for the chosen configuration and never used to choose: {format_interval(best['test'])}%."
    ]
    method = (res.get("comparison") or {}).get("method", "Welch's t-test, Holm-corrected")
    test = f"on validation {metric}, adjusted for choosing the best: {method}"
    worse = [r for r in res["rows"] if r is not best and r["p_value"] is not None and r["p_value"] < 0.05]
    same = [r for r in res["rows"] if r is not best and r["p_value"] is not None and r["p_value"] >= 0.05]
    untested = [r for r in res["rows"] if r is not best and r["p_value"] is None and r["val"]["n"]]
    if worse:
        lines.append(
            f"Significantly worse than the chosen cell ({test}, p < 0.05): "
            + "; ".join(f"{r['cell']} ({100 * r['val']['mean']:.2f}%, adj. p={r['p_value']:.3g})" for r in worse)
            + "."
        )
    if same:
        lines.append(
            f"Not distinguishable from the chosen cell with {best['val']['n']} {runs_of} ({test}, p >= 0.05): "
            + "; ".join(f"{r['cell']} ({100 * r['val']['mean']:.2f}%, adj. p={r['p_value']:.2f})" for r in same)
            + ". The data do not show that the chosen cell is better than these."
        )
    if untested:
        lines.append("Too few seeds to test: " + ", ".join(r["cell"] for r in untested) + ".")
    if not worse and not same and not untested:
        lines.append("There is only one cell with results.")
    for fail in res.get("failed", []):
        fold = "" if fail.get("fold") is None else f" fold {fail['fold']}"
        lines.append(f"Failed: {fail['cell']} seed {fail['seed']}{fold}: {fail['reason']}.")
    return lines


def _saved_study(report: Report, top_dir: str, spec_file: str, what: str) -> tuple[dict, dict]:
    """The saved spec and results of a sweep or search; opens its report (its title)."""
    spec = runs.read_json(os.path.join(top_dir, spec_file))
    path = os.path.join(top_dir, "results.json")
    if not os.path.exists(path):
        raise CnnlabError(f"{path}: missing; run the {what} (or rerun its command) first")
    res = runs.read_json(path)
    report.add("h1", f"cnnlab {what} report: {os.path.basename(os.path.abspath(top_dir))}")
    return spec, res


def _sweep_sections(report: Report, sweep_dir: str) -> None:
    """A sweep: the chosen cell and the verdicts first (validation and test figures with their intervals), the
    cells compared, the chosen cell's curves; then the grid, the base configuration's settings that differ from
    its preset, and the whole base configuration."""
    spec, res = _saved_study(report, sweep_dir, "sweep.json", "sweep")
    report.add("h2", "Results")
    for line in _conclusion(res):
        report.add("p", line)
    _sweep_comparison(report, sweep_dir, res)
    best = res.get("best")
    if best:
        row = next(r for r in res["rows"] if r["cell"] == best)
        epochs = next(c for c in cells_of(spec["grid"]) if cell_name(c) == best).get("epochs")
        chosen = [os.path.join(sweep_dir, "runs", name) for name in row.get("runs", []) if name]
        if chosen:
            _chosen_curves(
                report,
                sweep_dir,
                chosen[0],
                f"The chosen configuration: {best}",
                "its first seed" + (" and fold" if res.get("folds") else ""),
                epochs,
            )
    base = saved_config(spec["config"])
    _sweep_design(report, spec, res)
    _settings(report, "h2", base, "Base configuration")
    _full_config(report, "h2", base)


def _sweep_design(report: Report, spec: dict, res: dict) -> None:
    """The grid, the seeds (and folds), the metric cells are compared on."""
    report.add("h2", "Design")
    seeds = f"{spec['seeds']} seeds ({', '.join(map(str, res.get('seed_values') or range(spec['seeds'])))})"
    folds = res.get("folds")
    report.add(
        "p",
        f"Grid: {'; '.join(f'{k} = {v}' for k, v in spec['grid'].items())}; "
        + (
            f"{folds}-fold cross-validation x {seeds} per cell ({folds} x {spec['seeds']} = "
            f"{folds * spec['seeds']} trainings): stratified folds of the training images, drawn with "
            "the sweep's seed, the same for every cell and seed; each fold's held-out part is its "
            "validation split, the test split untouched. "
            if folds
            else f"{seeds} per cell. "
        )
        + "Every other setting is the base configuration below.",
    )
    metric = res.get("select_metric", "val_accuracy")
    report.add(
        "p",
        f"Cells are compared on validation {METRIC_NAMES.get(metric, metric)} (`{metric}`), never on the "
        f"test split; {sample_note(res)}.",
    )


def _sweep_comparison(report: Report, sweep_dir: str, res: dict) -> None:
    """Each cell's validation and test figures and verdict, the heatmap, what the p-values are."""
    metric = res.get("select_metric", "val_accuracy")
    report.add(
        "table",
        (
            [
                "cell",
                "n",
                f"validation {METRIC_NAMES.get(metric, metric)} % [95% CI]",
                "test acc. % [95% CI]",
                "training s",
                "verdict",
            ],
            [
                [
                    r["cell"],
                    str(r["val"]["n"]),
                    format_interval(r["val"]),
                    format_interval(r["test"]),
                    "-" if r["train_time_s"]["mean"] is None else f"{r['train_time_s']['mean']:.0f}",
                    r["verdict"],
                ]
                for r in res["rows"]
            ],
        ),
    )
    if os.path.exists(os.path.join(sweep_dir, "heatmap.png")):
        report.image(
            "heatmap.png",
            os.path.join(sweep_dir, "heatmap.png"),
            f"mean validation {METRIC_NAMES.get(metric, metric)} per cell",
        )
    report.add("p", "In the verdicts, " + p_value_note(res) + ".")


def _chosen_curves(
    report: Report, top_dir: str, run_dir: str, title: str, which: str, epochs: int | None = None
) -> None:
    """The training curves of the chosen configuration's run (its first `epochs` epochs)."""
    if not runs.is_complete(run_dir):
        return
    history = runs.load_run(run_dir)["history"][:epochs]
    report.add("h2", title)
    report.add(
        "p",
        f"Curves of {which} (run `{os.path.relpath(run_dir, top_dir)}`{f', first {epochs} epochs' if epochs else ''}).",
    )
    for written in plot_curves(history, report.scratch, prefix="chosen_"):
        if written.endswith(".png"):
            report.image(os.path.basename(written), written, "training vs validation of the chosen configuration")


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _search_sections(report: Report, search_dir: str) -> None:
    """A TPE search: the best trial on validation first, every trial (parameters, state, scores), the best
    trial's curves; then its space, the base configuration's settings that differ from its preset, all of it."""
    spec, res = _saved_study(report, search_dir, "search.json", "search")
    metric = res.get("select_metric", "val_accuracy")
    report.add("h2", "Results")
    best = res.get("best")
    if best is None:
        report.add("p", "No trial has completed yet.")
    else:
        report.add(
            "p",
            f"Chosen on validation {METRIC_NAMES.get(metric, metric)}: **trial {best['trial']}** "
            f"({_params(best['params'])}), {_pct(best.get('val', best['val_accuracy']))}; its test accuracy: "
            f"{_pct(best['test_accuracy'])}. Each trial ran one seed, so the gaps between trials include "
            "seed-to-seed noise; rerun the chosen configuration with `cnnlab sweep --seeds N` to measure it.",
        )
    _search_trials(report, res, metric)
    if best is not None:
        _chosen_curves(
            report,
            search_dir,
            os.path.join(search_dir, "runs", best["run"]),
            f"The chosen configuration: trial {best['trial']}",
            f"trial {best['trial']}",
        )
    base = saved_config(spec["config"])
    _search_design(report, spec, metric)
    _settings(report, "h2", base, "Base configuration")
    _full_config(report, "h2", base)


def _search_design(report: Report, spec: dict, metric: str) -> None:
    """The search space, the sampler and pruner, the trials."""
    report.add("h2", "Design")
    space = "; ".join(
        f"{k} = one of {', '.join(map(str, d['values']))}"
        if d["kind"] == "choice"
        else f"{k} = {d['low']}..{d['high']}{' (log scale)' if d['log'] else ''}"
        for k, d in spec["space"].items()
    )
    report.add(
        "p",
        f"TPE search (Optuna's TPE sampler; median pruning on validation {METRIC_NAMES.get(metric, metric)} "
        f"(`{metric}`) after each epoch; never on the test split) over "
        f"{space}; {spec['trials']} trials, one seed each (seed {spec['config'].get('seed', 0)}). Every other setting is the base configuration below.",
    )


def _search_trials(report: Report, res: dict, metric: str) -> None:
    """How many trials completed, were pruned or failed, and a table of every trial."""
    report.add("h2", "Trials")
    states = [r["state"] for r in res["rows"]]
    report.add(
        "p",
        f"{len(states)} trials finished: "
        + ", ".join(
            f"{states.count(s)} {word}"
            for s, word in (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed"))
        )
        + ".",
    )
    report.add(
        "table",
        (
            [
                "trial",
                "state",
                "parameters",
                f"validation {METRIC_NAMES.get(metric, metric)}",
                "test acc.",
                "epochs",
                "note",
            ],
            [
                [
                    str(r["trial"]),
                    r["state"],
                    _params(r["params"]),
                    _pct(r.get("val", r["val_accuracy"])),
                    _pct(r["test_accuracy"]),
                    "-" if r.get("epochs") is None else str(r["epochs"]),
                    r["reason"] or (f"pruned after epoch {r.get('epochs')}" if r["state"] == "PRUNED" else ""),
                ]
                for r in res["rows"]
            ],
        ),
    )


# --- rendering ------------------------------------------------------------------------------------

# the report's own, after pages.CSS: pictures in a row share its width (the curves side by side)
CSS = (
    "img{max-width:100%;display:block;margin:.6em 0}.row{display:flex;gap:1em}"
    ".row img{min-width:0;width:calc(50% - .5em);max-width:30em}"
    "summary{cursor:pointer;margin:.6em 0}"
)


def _inline_md(text: str) -> str:
    """**bold** and `code` of the report's own sentences, as HTML."""
    out, parts = [], text.split("`")
    for i, part in enumerate(parts):
        part = html.escape(part)
        if i % 2:
            out.append(f"<code>{part}</code>")
        else:
            bits = part.split("**")
            out.append("".join(f"<strong>{b}</strong>" if j % 2 else b for j, b in enumerate(bits)))
    return "".join(out)


def _table(headers: list[str], rows: list[list[str]]) -> tuple[str, str]:
    """A table as (markdown, HTML)."""
    md = (
        "| "
        + " | ".join(headers)
        + " |\n|"
        + "---|" * len(headers)
        + "\n"
        + "".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |\n" for row in rows)
    )
    body = (
        "<table><thead><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        + "</tr></thead><tbody>"
        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        + "</tbody></table>"
    )
    return md, body


def render(report: Report, out_dir: str) -> tuple[str, str]:
    md, body = [], []
    files_dir = os.path.join(out_dir, "report_files")
    os.makedirs(files_dir, exist_ok=True)

    def picture(name: str, data: bytes, alt: str) -> str:
        runs.write_atomic(os.path.join(files_dir, name), data)
        md.append(f"![{alt}](report_files/{name})\n")
        return f'<img alt="{html.escape(alt)}" src="{png_uri(data)}">'

    for kind, payload in report.blocks:
        if kind in ("h1", "h2", "h3"):
            md.append(f"{'#' * int(kind[1])} {payload}\n")
            body.append(f"<{kind}>{html.escape(str(payload))}</{kind}>")
        elif kind == "p":
            md.append(f"{payload}\n")
            body.append(f"<p>{_inline_md(str(payload))}</p>")
        elif kind == "pre":
            md.append(f"```\n{payload}\n```\n")
            body.append(f"<pre>{html.escape(str(payload))}</pre>")
        elif kind == "table":
            table_md, table_html = _table(*payload)
            md.append(table_md)
            body.append(table_html)
        elif kind == "details":  # (summary, (headers, rows)): a table folded away
            summary_text, (headers, rows) = payload
            table_md, table_html = _table(headers, rows)
            md.append(f"<details><summary>{html.escape(summary_text)}</summary>\n\n{table_md}\n</details>\n")
            body.append(f"<details><summary>{html.escape(summary_text)}</summary>{table_html}</details>")
        elif kind == "img":
            body.append(picture(*payload))
        elif kind == "imgs":  # images side by side
            body.append('<div class="row">' + "".join(picture(*shown) for shown in payload) + "</div>")
        elif kind == "link":  # (text, a relative link to a file beside the report)
            text, href = payload
            md.append(f"[{text}]({href})\n")
            body.append(f'<p><a href="{html.escape(href)}">{html.escape(text)}</a></p>')
    title = next((str(p) for k, p in report.blocks if k == "h1"), "cnnlab report")
    text = page(title, body, CSS)
    md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
    # names from the user's folders that are not UTF-8 are written as their \\xNN escapes
    runs.write_atomic(md_path, printable("\n".join(md)))
    runs.write_atomic(html_path, printable(text))
    return md_path, html_path


def build_report(target: str) -> tuple[str, str]:
    """Write report.md and report.html for a finished run, a sweep or a search directory; returns their paths."""
    if not os.path.isdir(target):
        raise CnnlabError(f"{target}: no such run or sweep directory")
    report = Report()
    try:
        if os.path.exists(os.path.join(target, "sweep.json")):
            _sweep_sections(report, target)
        elif os.path.exists(os.path.join(target, "search.json")):
            _search_sections(report, target)
        else:
            _run_sections(report, target)
        return render(report, target)
    finally:
        import shutil

        shutil.rmtree(report.scratch, ignore_errors=True)


__all__ = ["build_report"]
