"""The README's quick start runs as written on a fresh clone: its commands are read from README.md and run in
an empty folder (no ../shared, no CNNLAB_DATA), with only the substitutions listed below. And no command shown
to users in README.md or docs/ names the project's own machines or installs cnnlab from PyPI."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, make_dataset, write_image

README = ROOT / "README.md"

# The README's sections walked, in order, each as a list of blocks; the blocks of one walk share a folder
# (Your own photos fine-tunes from the Quick start's runs/fast). "" is the block above the first section.
WALKS = {"one-liner": [""], "quick start": ["Quick start", "Your own photos"]}

# What differs from the README, and nothing else:
# - the CIFAR-10 download (170 MB from the network) is parsed by cnnlab's own parser, then its folder is a
#   small generated dataset instead: 3 classes of 16x16 PNGs, 10 training and 3 test images each;
DOWNLOAD = ["data", "get", "cifar10"]
# - every training is made tiny by these flags, appended (the last value of a flag wins);
TINY_TRAINING = ["--epochs", "1", "--batch-size", "8", "--threads", "1", "--no-progress"]
# - the user's own files named by the README are generated at their paths: a photo, and a photo folder
#   laid out as the download's;
USER_PHOTO = "my_photo.jpg"
USER_FOLDER = "PHOTOS"
# - `cnnlab` (or `.venv/bin/cnnlab`) is `python -m cnnlab` with this test's Python and this checkout.

# Not run: the set-up commands, which install (a virtual environment, pip: this test runs in the installed
# environment), and the test suite, which this file is part of. No quick-start command needs a GPU.
SKIPPED = {
    ("python3", "-m", "venv"): "creates the virtual environment (set-up)",
    ("pip",): "installs cnnlab and torch (set-up; needs the network)",
    ("python", "-m", "pytest"): "the test suite itself (this file is part of it)",
}


def readme_blocks() -> dict[str, list[tuple[int, str]]]:
    """The first ```bash block of each `## ` section of README.md ("" for the one above the first section),
    as (line number, line) pairs."""
    blocks, section, collecting, in_fence = {}, "", None, False
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_fence = not in_fence
            first_bash = in_fence and line.strip() == "```bash" and section not in blocks
            collecting = section if first_bash else None
            if first_bash:
                blocks[section] = []
        elif collecting is not None:
            blocks[collecting].append((number, line))
        elif not in_fence and line.startswith("## "):
            section = line[3:].strip()
    return blocks


def commands(lines: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Each command of a block's lines, `a && b` as two, comments dropped; `.venv/bin/X` as X."""
    out = []
    for number, line in lines:
        words = shlex.split(line, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            argv, words = words[:end], words[end + 1 :]
            out.append((number, [argv[0].removeprefix(".venv/bin/"), *argv[1:]]))
    return out


def skip_reason(argv: list[str]) -> str | None:
    for prefix, reason in SKIPPED.items():
        if tuple(argv[: len(prefix)]) == prefix:
            return reason
    return None


def walk_commands(walk: str) -> list[tuple[int, list[str]]]:
    blocks = readme_blocks()
    missing = [name or "(the block at the top)" for name in WALKS[walk] if name not in blocks]
    assert not missing, f"README.md has no ```bash block under {missing}: update WALKS in {__file__}"
    return [c for name in WALKS[walk] for c in commands(blocks[name])]


def cnnlab_commands(walk: str) -> list[tuple[int, list[str]]]:
    steps = walk_commands(walk)
    unknown = [(n, a) for n, a in steps if a[0] != "cnnlab" and skip_reason(a) is None]
    assert not unknown, f"README.md: commands neither cnnlab nor set-up: {unknown}; walk them or list them in SKIPPED"
    return [(n, a[1:]) for n, a in steps if a[0] == "cnnlab"]


def test_the_walks_read_the_readme():
    # Each walk has cnnlab commands, and the quick start trains, evaluates, predicts and reports.
    quick = [argv[0] for _, argv in cnnlab_commands("quick start")]
    assert {"data", "train", "evaluate", "predict", "report"} <= set(quick), quick
    assert cnnlab_commands("one-liner")
    skipped = [a for _, a in walk_commands("one-liner") if skip_reason(a)]
    assert skipped, "the one-liner has no set-up command any more: check SKIPPED still says what is not run"


def generate_user_files(folder: pathlib.Path, argv_list: list[list[str]]) -> None:
    if any(USER_FOLDER in argv for argv in argv_list):
        make_dataset(folder / USER_FOLDER, 10, 3)
    if any(USER_PHOTO in argv for argv in argv_list):
        rng = np.random.default_rng(0)
        write_image(str(folder / USER_PHOTO), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))


def fake_download(folder: pathlib.Path, number: int, argv: list[str]) -> None:
    from cnnlab.cli import build_parser

    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"README.md:{number}: `cnnlab {shlex.join(argv)}` is refused by cnnlab's parser")
    make_dataset(folder / args.dir, 10, 3)


def run_cnnlab(folder: pathlib.Path, number: int, argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CNNLAB_DATA"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    run = argv + TINY_TRAINING if argv[0] == "train" else argv
    proc = subprocess.run([sys.executable, "-m", "cnnlab", *run], cwd=folder, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (
        f"README.md:{number}: `cnnlab {shlex.join(argv)}` failed (exit {proc.returncode}; run as "
        f"`cnnlab {shlex.join(run)}` in {folder}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


@pytest.mark.parametrize("walk", list(WALKS))
def test_quick_start_runs_as_written(walk, tmp_path):
    steps = cnnlab_commands(walk)
    if walk == "one-liner":
        quick = [argv for _, argv in cnnlab_commands("quick start")]
        if [argv for _, argv in steps] == quick[: len(steps)]:
            pytest.skip("its cnnlab commands are the quick start's first ones, walked there")
    folder = tmp_path / "clone"
    folder.mkdir()
    generate_user_files(folder, [argv for _, argv in steps])
    for number, argv in steps:
        if argv[:3] == DOWNLOAD:
            fake_download(folder, number, argv)
        else:
            run_cnnlab(folder, number, argv)
        if argv[0] == "train" and "--out" in argv:
            out = argv[argv.index("--out") + 1]
            assert (folder / out / "COMPLETE").exists(), f"README.md:{number}: no finished run in {out}"
        if argv[0] == "report":
            assert (folder / argv[1] / "report.html").exists(), f"README.md:{number}: no {argv[1]}/report.html"


# Strings no command shown to users may hold: the project's machines' folders, and an install from PyPI
# (cnnlab is not published; prose may say so on the same line).
FORBIDDEN = ["../shared", "/work/", "pip install cnnlab"]
NOT_PUBLISHED = re.compile(r"not (on PyPI|published)", re.IGNORECASE)
COMMAND_WORDS = ("cnnlab", "python", "pip", ".venv/", "torchrun", "bash", "nice", "mkdocs", "git ")


def shown_commands(text: str):
    """(line number, text) of every line of a fenced code block, of an indented one (lines indented 4 spaces
    after a blank line: a collapsed note's body too, where the benchmarks page shows the records' commands), and
    of every inline code span that starts with a command (prose may name a folder in backticks)."""
    inside, previous = False, ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside or (line.startswith("    ") and (not previous.strip() or previous.startswith("    "))):
            yield number, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                if span.startswith(COMMAND_WORDS) or re.match(r"[A-Z_]+=\S+ ", span):
                    yield number, span
        previous = line


def test_no_command_needs_the_project_machines_or_pypi():
    found = []
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for number, command in shown_commands(path.read_text()):
            if NOT_PUBLISHED.search(command):
                continue
            found += [
                f"{path.relative_to(ROOT)}:{number}: {bad!r} in {command.strip()!r}"
                for bad in FORBIDDEN
                if bad in command
            ]
    assert not found, "commands a fresh clone cannot run as shown:\n" + "\n".join(found)
