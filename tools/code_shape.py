"""The longest functions of the package and those with the most parameters: places to look at, not a limit.

    python tools/code_shape.py [--top 15] [PATH ...]        # PATH: files or folders (default cnnlab/)

A function should fit on a screen (about 60 lines) and take a small spec object rather than a long list of
loose parameters; a function above either mark is worth a look, and often it reads better left whole (a
training loop split into five one-line methods to pass a count reads worse). Lines: from the first line of
the body (its docstring) to the last. Parameters: all but self/cls, *args and **kwargs. Nested functions
and methods are listed on their own.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCREEN_LINES, MANY_PARAMETERS = 60, 8


@dataclass(frozen=True)
class Shape:
    where: str  # file:line name
    lines: int
    parameters: int


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return node.end_lineno - node.body[0].lineno + 1


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return [name for name in names if name not in ("self", "cls")]


def shapes(paths: list[pathlib.Path]) -> list[Shape]:
    """The shape of every function and method in the Python files under `paths`, nested ones included."""
    files = sorted(f for path in paths for f in ([path] if path.is_file() else path.rglob("*.py")))
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.resolve().relative_to(ROOT)}:{node.lineno} {node.name}"
                found.append(Shape(where, body_lines(node), len(parameters(node))))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=pathlib.Path, default=[ROOT / "cnnlab"])
    parser.add_argument("--top", type=int, default=15, help="how many of each list (default 15)")
    args = parser.parse_args(argv)
    found = shapes(args.paths)
    for title, key, mark in (("lines", "lines", SCREEN_LINES), ("parameters", "parameters", MANY_PARAMETERS)):
        ranked = sorted(found, key=lambda s: getattr(s, key), reverse=True)[: args.top]
        over = sum(getattr(s, key) > mark for s in found)
        print(f"most {title} ({over} of {len(found)} functions above {mark}):")
        for shape in ranked:
            print(f"  {getattr(shape, key):4d}  {shape.where}")


if __name__ == "__main__":
    main()
