"""docs/cli.md, the command-line reference, is what the parser says: every command and every flag `--help`
lists, and tools/cli_reference.py --check fails when the page is stale."""

import re
import sys

import pytest
from conftest import ROOT

from cnnlab.cli import build_parser, main

sys.path.insert(0, str(ROOT / "tools"))
import cli_reference  # noqa: E402

PAGE = ROOT / "docs" / "cli.md"


def commands(parser=None, path=("cnnlab",)):
    """Every command path (("cnnlab", "data", "get"), ...) with a parser of its own."""
    parser = parser or build_parser()
    found = [path]
    for action in parser._actions:
        if isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                found += commands(sub, (*path, name))
    return found


def help_text(path, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*path[1:], "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def section(page: str, heading: str) -> str:
    """The text under `heading` up to the next heading of any level."""
    start = page.index(heading + "\n")
    following = re.search(r"^#+ ", page[start + len(heading) :], re.M)
    return page[start : start + len(heading) + (following.start() if following else len(page))]


def test_the_committed_page_is_what_the_parser_makes():
    assert cli_reference.main(["--check"]) == 0, "run python tools/cli_reference.py"


def test_every_flag_of_every_command_in_its_help_is_on_the_page(capsys):
    page = PAGE.read_text(encoding="utf-8")
    config = section(page, "## Config flags")
    paths = commands()
    assert ("cnnlab", "data", "get") in paths and ("cnnlab", "cache", "clear") in paths and len(paths) > 15
    seen = set()
    for path in paths:
        text = help_text(path, capsys)
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - {"--help"}
        seen |= flags
        own = page if len(path) == 1 else section(page, f"{'#' * len(path)} {' '.join(path)}")
        missing = sorted(f for f in flags if not re.search(f"(`|<code>){f}[ `<]", own + config))
        assert not missing, (path, missing)
        if "config (defaults: the chosen preset)" in text:
            assert "And every [config flag](#config-flags)." in own
    assert {"--batch-size", "--no-flip", "--archive", "--top-k", "--version"} <= seen and len(seen) > 100


def test_every_flag_says_what_it_does():
    # `cnnlab data info --help` listed --val-fraction with no word on it, and the reference page an empty cell
    unexplained = []
    for path in commands():
        parser = build_parser()
        for name in path[1:]:
            parser = next(a.choices[name] for a in parser._actions if isinstance(a.choices, dict))
        unexplained += [
            f"{' '.join(path)} {a.option_strings[0]}" for a in parser._actions if a.option_strings and not a.help
        ]
    assert not unexplained, unexplained


def test_check_fails_on_a_stale_page_and_the_tool_rewrites_it(tmp_path, capsys):
    page = tmp_path / "cli.md"
    page.write_text(PAGE.read_text(encoding="utf-8").replace("`--top-k TOP_K`", "`--top TOP_K`"), encoding="utf-8")
    assert cli_reference.main(["--check"], page=page) == 1
    assert capsys.readouterr().err == "cli.md is out of date: run python tools/cli_reference.py\n"
    assert cli_reference.main([], page=page) == 0
    assert page.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8")
