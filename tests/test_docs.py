"""The documentation's generated parts stay in step with what generates them."""

import json
import pathlib
import subprocess
import sys

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
    assert "tables" not in page  # a table is shown as one, not again as rows


def test_a_record_table_included_in_a_page_is_filled_from_the_record(tmp_path):
    record = {
        "command": "python benchmarks/x.py",
        "machine": {"cpu": "Some CPU", "cores": 2, "flags": ["avx2"], "gpu": None},
        "torch": "2.13.0",
        "commit": "abc1234",
        "date": "2026-12-07T12:00:00",
        "results": {"tables": {"rates": {"columns": ["cells", "rate"], "rows": [[2, 0.0512345]]}}},
    }
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
