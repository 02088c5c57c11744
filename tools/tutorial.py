"""Runs the tutorial (docs/tutorial.md) as written and puts its real terminal output into the page, with its
pictures (docs/images/tutorial_*.png). The commands are the page's own: every ```bash and ```python block, in
order, in a new scratch folder, as a user types them, but for
- the set-up (git, the virtual environment, pip): this Python, with this checkout's cnnlab, runs the rest;
- `cnnlab data get cifar10 DIR` (170 MB from the network): DIR is a link to the data folder given here.

A block followed by

    <!-- output -->
    <!-- end output -->

gets its commands' stdout and stderr between those two lines, as a terminal shows them (cnnlab draws progress
bars on a terminal only), the scratch folder's paths written relative to it and the data folder's as the page
names it (`data/cifar10`). Nothing is written unless every command succeeds. `--check` runs nothing and exits 1
when an output is missing or was made by another block than the one above it (the test suite runs it, and
tests/test_tutorial.py walks the commands on a small generated folder).

    python tools/tutorial.py data/cifar10          # CIFAR-10 as image folders (cnnlab data get cifar10 data/cifar10)
    python tools/tutorial.py data/cifar10 --scratch /tmp/tour   # keep the runs (a new or empty folder)
    python tools/tutorial.py --check
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "tutorial.md"
IMAGES = ROOT / "docs" / "images"
CURVES, CAMS = "tutorial_curves.png", "tutorial_cams.png"  # the train run's curves, predict --explain's maps

OUTPUT_START, OUTPUT_END = "<!-- output", "<!-- end output -->"
DOWNLOAD = ["cnnlab", "data", "get", "cifar10"]
# Not run: the set-up, which makes the environment this script already runs in.
SETUP = [["git"], ["cd"], ["python3", "-m", "venv"], ["."], ["source"], ["pip"]]


class TutorialError(Exception):
    """A command of the page failed, or the page and its outputs are out of step: one message, no traceback."""


@dataclass(frozen=True)
class Block:
    language: str  # bash or python
    code: str  # as on the page, without its fences
    line: int  # of its opening fence, from 1
    output: tuple[int, int] | None  # lines (from 0) of its output's first and last marker, if it has one

    @property
    def key(self) -> str:
        """Names the block its output was made by: the output of an edited block is stale."""
        return hashlib.sha256(f"{self.language}\n{self.code}".encode()).hexdigest()[:12]

    def commands(self) -> list[list[str]]:
        """A bash block's commands (`a && b` as two, comments dropped, `\\` continuations joined); a python
        block is one. A set-up command is split at blanks only (`git clone <this repository's URL>` is no
        shell quoting)."""
        if self.language == "python":
            return [["python", "-c", self.code]]
        out = []
        for line in self.code.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = part.split() if is_setup(part.split()) else shlex.split(part, comments=True)
                if words:
                    out.append(words)
        return out


def blocks(page: str) -> list[Block]:
    """The page's ```bash and ```python blocks, in order, each with the output region that follows it."""
    lines, found, i = page.splitlines(), [], 0
    while i < len(lines):
        fence = re.match(r"(`{3,})\s*(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        close = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence.group(1)), len(lines))
        after = next((j for j in range(close + 1, len(lines)) if lines[j].strip()), len(lines))
        output = None
        if after < len(lines) and lines[after].startswith(OUTPUT_START):
            end = next((j for j in range(after, len(lines)) if lines[j].strip() == OUTPUT_END), None)
            if end is None:
                raise TutorialError(f"{PAGE.name}:{after + 1}: an output with no {OUTPUT_END} after it")
            output = (after, end)
        if fence.group(2) in ("bash", "python"):
            found.append(Block(fence.group(2), "\n".join(lines[i + 1 : close]), i + 1, output))
        i = close + 1
    return found


def is_setup(argv: Sequence[str]) -> bool:
    return any(list(argv[: len(prefix)]) == prefix for prefix in SETUP)


@dataclass(frozen=True)
class Walk:
    """Where and how the page's commands run."""

    folder: pathlib.Path  # the scratch folder, the commands' working directory
    stand_in: Callable[[pathlib.Path], None]  # makes `cnnlab data get`'s folder (given its path)
    train_flags: tuple[str, ...] = ()  # appended to every `cnnlab train` (the tests make trainings tiny)


def run_block(block: Block, walk: Walk) -> str:
    """The block's commands run in turn: their stdout and stderr together, as a terminal shows them."""
    env = {k: v for k, v in os.environ.items() if k != "CNNLAB_DATA"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr interleaved as they are printed
    env["CNNLAB_CACHE"] = str(walk.folder / ".cnnlab-cache")  # a first-time user's empty decode cache
    text = ""
    for argv in block.commands():
        if is_setup(argv):
            continue
        if argv[: len(DOWNLOAD)] == DOWNLOAD:
            walk.stand_in(walk.folder / argv[len(DOWNLOAD)])
            continue
        if argv[0] == "cnnlab":
            run = [sys.executable, "-m", "cnnlab", *argv[1:], *(walk.train_flags if argv[1:2] == ["train"] else ())]
        elif argv[0] == "python":
            run = [sys.executable, *argv[1:]]
        else:
            raise TutorialError(f"{PAGE.name}:{block.line}: `{shlex.join(argv)}` is neither cnnlab nor set-up")
        proc = subprocess.run(
            run, cwd=walk.folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        text += proc.stdout
        if proc.returncode != 0 or "Traceback" in proc.stdout:
            raise TutorialError(
                f"{PAGE.name}:{block.line}: `{shlex.join(argv)[:200]}` failed (exit {proc.returncode}) in "
                f"{walk.folder}:\n{proc.stdout[-3000:]}"
            )
    return text


def clean(text: str, folder: pathlib.Path, data: str, data_name: str) -> str:
    """The text as the page shows it: what a terminal leaves of a line redrawn with carriage returns, no
    trailing blanks, and no path of this machine: the scratch folder's relative to it, the data folder's as
    the page names it, this checkout's relative to it, this Python's environment as `.venv`."""
    replacements = [
        (os.path.realpath(data), data_name),
        (str(folder.absolute()) + os.sep, ""),
        (os.path.realpath(folder) + os.sep, ""),
        (str(ROOT) + os.sep, ""),
        (sys.prefix, ".venv"),
    ]
    lines = []
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line.rsplit("\r", 1)[-1]
        for old, new in replacements:
            line = line.replace(old, new)
        lines.append(line.rstrip())
    return "\n".join(lines).strip("\n")


def output_region(block: Block, text: str) -> list[str]:
    fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`{3,}", text))])  # longer than any in the text
    return [
        f"{OUTPUT_START} of the block above, written by tools/tutorial.py: {block.key} -->",
        f"{fence}text",
        *(text or "(nothing printed)").split("\n"),
        fence,
        OUTPUT_END,
    ]


def render(page: str, outputs: dict[int, str]) -> str:
    """The page with the output of each block (by its line) in its output region."""
    lines = page.splitlines()
    for block in reversed(blocks(page)):
        if block.output and block.line in outputs:
            first, last = block.output
            lines[first : last + 1] = output_region(block, outputs[block.line])
    return "\n".join(lines) + "\n"


def check(page: str) -> list[str]:
    """What is out of step: an output not made by the block above it, or none at all; a missing picture."""
    found = blocks(page)
    lines = page.splitlines()
    problems = [
        f"{PAGE.name}:{b.output[0] + 1}: the output is not the block above's (line {b.line}): run tools/tutorial.py"
        for b in found
        if b.output and not lines[b.output[0]].endswith(f": {b.key} -->")
    ]
    if not any(b.output for b in found):
        problems.append(f"{PAGE.name}: no block has an output")
    for name in re.findall(r"\]\((images/tutorial_[\w.]+)\)", page):
        if not (PAGE.parent / name).exists():
            problems.append(f"{PAGE.name}: docs/{name} is missing: run tools/tutorial.py")
    return problems


def tutorial_argv(found: list[Block], command: str, flag: str) -> str | None:
    """The value of `flag` in the page's first `cnnlab COMMAND` that has it (a run folder, a maps folder)."""
    for block in found:
        for argv in block.commands():
            if argv[:2] == ["cnnlab", command] and flag in argv:
                return argv[argv.index(flag) + 1]
    return None


def pictures(found: list[Block], folder: pathlib.Path, images: pathlib.Path) -> None:
    """The train run's curves, and predict --explain's maps one image a row."""
    from docs_pictures import curves, save_small  # tools/, beside this script
    from PIL import Image

    curves(str(folder / tutorial_argv(found, "train", "--out")), CURVES, str(images))
    maps = sorted((folder / tutorial_argv(found, "predict", "--explain")).glob("*.png"))
    rows = [Image.open(path).convert("RGB") for path in maps]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    for k, row in enumerate(rows):
        sheet.paste(row, (0, sum(r.height for r in rows[:k])))
    save_small(sheet, CAMS, 800, str(images))


def walk_page(page: str, walk: Walk, log=print) -> dict[int, str]:
    """Every block run in turn; the raw output of each, by its line."""
    outputs, started = {}, time.perf_counter()
    for block in blocks(page):
        start = time.perf_counter()
        outputs[block.line] = run_block(block, walk)
        first = next((shlex.join(a) for a in block.commands() if not is_setup(a)), "(set-up only)").splitlines()[0]
        log(f"{PAGE.name}:{block.line}: {time.perf_counter() - start:6.1f} s  {first[:90]}")
    log(f"all blocks: {time.perf_counter() - started:.0f} s")
    return outputs


def data_name(found: list[Block]) -> str:
    for block in found:
        for argv in block.commands():
            if argv[: len(DOWNLOAD)] == DOWNLOAD:
                return argv[len(DOWNLOAD)]
    raise TutorialError(f"{PAGE.name} has no `{shlex.join(DOWNLOAD)} DIR`: the data folder stands in for it")


def generate(data: str, scratch: pathlib.Path, page_path: pathlib.Path, images: pathlib.Path) -> None:
    page = page_path.read_text(encoding="utf-8")
    found = blocks(page)
    name = data_name(found)

    def link(target: pathlib.Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(os.path.abspath(data), target_is_directory=True)

    outputs = walk_page(page, Walk(scratch, link), log=lambda line: print(line, file=sys.stderr))
    cleaned = {line: clean(text, scratch, data, name) for line, text in outputs.items()}
    pictures(found, scratch, images)
    page_path.write_text(render(page, cleaned), encoding="utf-8")
    print(f"wrote {page_path.name} and {CURVES}, {CAMS} (scratch folder: {scratch})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="CIFAR-10 as image folders (train/, test/): cnnlab data get's folder")
    parser.add_argument("--check", action="store_true", help="run nothing; exit 1 if an output is stale or missing")
    parser.add_argument("--scratch", type=pathlib.Path, help="run in this new or empty folder and keep it")
    parser.add_argument("--page", type=pathlib.Path, default=PAGE, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=pathlib.Path, default=IMAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(args.page.read_text(encoding="utf-8"))
            for problem in problems:
                print(problem, file=sys.stderr)
            return 1 if problems else 0
        if not args.data or not os.path.isdir(os.path.join(args.data, "train")):
            parser.error("give the CIFAR-10 image folders (DATA/train/<class>/*.png, DATA/test/<class>/*.png)")
        if args.scratch:
            args.scratch.mkdir(parents=True, exist_ok=True)
            if any(args.scratch.iterdir()):
                parser.error(f"--scratch {args.scratch}: not empty")
            generate(args.data, args.scratch.absolute(), args.page, args.images)
        else:
            with tempfile.TemporaryDirectory(prefix="cnnlab-tutorial-") as scratch:
                generate(args.data, pathlib.Path(scratch), args.page, args.images)
    except TutorialError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
