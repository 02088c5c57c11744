"""benchmarks/ holds only scripts that write records a page uses, and benchmarks/README.md's table says which:
a script that is neither in the table nor named with its reason fails here, as does a record no page shows."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def table_rows() -> list[list[str]]:
    rows = []
    for line in (BENCHMARKS / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and cells:
            rows.append(cells)
    return rows


def named(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_every_script_is_in_the_table_and_every_row_is_a_script():
    rows = table_rows()
    listed = {named(row[0])[0] for row in rows}
    present = {p.name for p in BENCHMARKS.iterdir() if p.suffix in (".py", ".sh")}
    assert listed == present


def test_every_script_in_the_records_table_writes_a_record_named_there():
    for row in table_rows():
        if len(row) != 3:
            continue  # the second table: a file and its reason
        script, records, page = named(row[0])[0], named(row[1]), row[2]
        source = (BENCHMARKS / script).read_text()
        assert "write_record(" in source, script
        assert (ROOT / page).exists(), page
        for record in records:
            stem = record.removesuffix(".json").split("<")[0]  # preset_<preset>.json: preset_
            assert stem.rstrip("_") in source or f'"{stem}' in source or f"'{stem}" in source, (script, record)


def test_every_committed_record_is_shown_by_a_page():
    pages = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    for record in sorted((BENCHMARKS / "records").glob("*.json")):
        assert record.stem in pages, f"{record.name} is shown by no page"
