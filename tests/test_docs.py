"""The documentation's generated parts stay in step with what generates them."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import benchmarks_page  # noqa: E402  (a script of tools/, not a package)


def test_the_benchmarks_page_is_what_the_committed_records_make():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmarks_page.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_result_of_a_record_reaches_the_page(tmp_path):
    record = {
        "figure": "a figure",
        "command": "python x.py",
        "machine": {"cpu": "Some CPU", "cores": 2, "flags": ["avx2"], "gpu": None},
        "torch": "2.13.0",
        "commit": "abc1234",
        "date": "2026-11-30T12:00:00",
        "results": {
            "accuracy": {"mean": 0.912345, "runs": [0.9, 0.91]},
            "rows": [{"mode": "none", "n": 3}],
            "tables": {"side by side": {"columns": ["step", "seconds"], "rows": [["scan", 1.23456], ["key", None]]}},
        },
    }
    (tmp_path / "demo.json").write_text(json.dumps(record))
    page = benchmarks_page.render(tmp_path)
    for text in (
        "## demo",
        "a figure",
        "Some CPU (2 cores; avx2)",
        "torch 2.13.0, commit abc1234, 2026-11-30",
        "| `accuracy.mean` | 0.9123 |",
        "| `accuracy.runs` | [0.9, 0.91] |",
        "| `rows[0].mode` | none |",
        "| `rows[0].n` | 3 |",
        "python x.py",
        "**side by side**\n\n| step | seconds |\n|---|---|\n| scan | 1.235 |\n| key | None |\n",
    ):
        assert text in page, text
    assert "`tables" not in page  # a table is shown as one, not again as rows


def test_a_record_opens_with_one_short_table_and_folds_its_raw_values(tmp_path):
    record = {
        "figure": "test accuracy over seeds",
        "command": "python benchmarks/presets.py /work/shared/datasets/cifar10 --runs /work/preset-runs",
        "machine": {"cpu": "Some CPU", "cores": 2, "flags": "avx avx2", "gpu": None},  # flags as one string
        "torch": "2.13.0",
        "commit": "abc1234",
        "date": "2026-12-07T12:00:00",
        "results": {
            "summary": {
                "test_accuracy": {"n": 3, "mean": 0.8785, "std": 0.0003, "ci_low": 0.8777, "ci_high": 0.8793},
                "train_time_s": {"n": 3, "mean": 480.5, "std": 3.0, "ci_low": 473.1, "ci_high": 487.9},
            },
            "runs": [0.8782, 0.8786, 0.8787],
        },
    }
    (tmp_path / "preset_fast.json").write_text(json.dumps(record))
    page = benchmarks_page.render(tmp_path)
    section = page[page.index("## preset_fast") :].splitlines()
    assert section[2:9] == [
        "| measured | test accuracy over seeds |",
        "|---|---|",
        "| figures (mean [95% CI]) | of `summary`:<br>`test_accuracy`: 87.85% [87.77, 87.93], n=3<br>"
        "`train_time_s`: 480.5 [473.1, 487.9], n=3 |",
        "| machine | Some CPU (2 cores; avx, avx2) |",  # words, never a letter at a time
        "| software | torch 2.13.0, commit abc1234, 2026-12-07 |",
        "| command | `python benchmarks/presets.py data/cifar10 --runs preset-runs` |",  # no machine path
        "",
    ]
    folded = section[section.index('??? note "All 11 recorded values (`benchmarks/records/preset_fast.json`)"') :]
    assert folded[2:4] == ["    | result | value |", "    |---|---|"]
    assert (
        "    | `summary.test_accuracy.mean` | 0.8785 |" in folded
        and "    | `runs` | [0.8782, 0.8786, 0.8787] |" in folded
    )


def test_a_record_table_too_wide_for_a_screen_is_cut_keeping_the_columns_that_name_its_rows():
    columns = ["kind", "N", *[f"m{i}" for i in range(12)]]
    rows = [["cifar", 10_000, *[i + 0.5 for i in range(12)]], ["photo", 300_000, *[i + 0.25 for i in range(12)]]]
    lines = benchmarks_page.markdown_table("wide", {"columns": columns, "rows": rows})
    heads = [line for line in lines if line.startswith("| kind | N |")]
    assert heads == [
        "| kind | N | m0 | m1 | m2 | m3 | m4 | m5 | m6 |",
        "| kind | N | m7 | m8 | m9 | m10 | m11 |",
    ]
    assert "| photo | 300000 | 7.25 | 8.25 | 9.25 | 10.25 | 11.25 |" in lines


def demo_record(results: dict) -> dict:
    """A record as benchmarks/record.py writes it, around `results`."""
    return {
        "command": "python benchmarks/x.py",
        "machine": {"cpu": "Some CPU", "cores": 2, "flags": ["avx2"], "gpu": None},
        "torch": "2.13.0",
        "commit": "abc1234",
        "date": "2026-12-07T12:00:00",
        "results": results,
    }


def test_a_record_table_included_in_a_page_is_filled_from_the_record(tmp_path):
    record = demo_record({"tables": {"rates": {"columns": ["cells", "rate"], "rows": [[2, 0.0512345]]}}})
    (tmp_path / "demo.json").write_text(json.dumps(record))
    page = (
        "Intro.\n\n<!-- record demo: rates -->\n| cells | rate |\n|---|---|\n| 2 | 0.9 |\n<!-- end record -->\nEnd.\n"
    )
    filled = benchmarks_page.included(page, tmp_path)
    assert "| 2 | 0.05123 |" in filled and "| 2 | 0.9 |" not in filled  # a hand-typed figure is replaced
    assert "Some CPU (2 cores; avx2), torch 2.13.0, commit abc1234, 2026-12-07" in filled
    assert filled.startswith("Intro.\n\n<!-- record demo: rates -->\n") and filled.endswith(
        "<!-- end record -->\nEnd.\n"
    )
    assert benchmarks_page.included(filled, tmp_path) == filled


def test_a_record_without_tables_is_included_by_key_paths_into_its_results(tmp_path):
    summary = {"n": 3, "mean": 0.1287, "std": 0.006, "ci_low": 0.1122, "ci_high": 0.1452}
    record = demo_record(
        {
            "rows": [
                {
                    "measure": "test",
                    "keras": summary,
                    "welch_p": 0.418,
                    "difference": {"mean": -0.0087, "ci_low": -0.039, "ci_high": 0.0217},
                    "values": {"keras": [0.12, 0.13]},
                },
            ],
            "grad": {
                "max_abs": 0.0583,
                "max_at": "b0",
                "per_tensor": {"w0": {"max_abs": 0.0469}, "b0": {"max_abs": 0.0583}},
            },
            "step": {"max_abs": 0.002},
        }
    )
    (tmp_path / "demo.json").write_text(json.dumps(record))
    page = "<!-- record demo: rows in % -->\n<!-- end record -->\n\n<!-- record demo: grad, step -->\n<!-- end record -->\n"
    page += "\n<!-- record demo: grad.per_tensor -->\n<!-- end record -->\n"
    filled = benchmarks_page.included(page, tmp_path)
    assert (  # a list of dicts: a row each; summaries as mean [low, high], here in percent; lists left out
        "| measure | keras | welch_p | difference |\n|---|---|---|---|\n"
        "| test | 12.87 [11.22, 14.52] | 0.418 | -0.87 [-3.90, 2.17] |\n"
    ) in filled
    assert (  # several paths: a row each, named by its path; a key a row lacks is an empty cell
        "|  | max_abs | max_at |\n|---|---|---|\n| grad | 0.0583 | b0 |\n| step | 0.002 |  |\n"
    ) in filled
    assert "|  | max_abs |\n|---|---|\n| w0 | 0.0469 |\n| b0 | 0.0583 |\n" in filled  # a dict of dicts: by key
    assert filled.count("*Record `benchmarks/records/demo.json`: Some CPU (2 cores; avx2)") == 3
    assert benchmarks_page.included(filled, tmp_path) == filled
    with pytest.raises(ValueError, match="records/demo.json has no table 'rowz' \\(no result 'rowz'\\)"):
        benchmarks_page.included("<!-- record demo: rowz -->\n<!-- end record -->\n", tmp_path)
