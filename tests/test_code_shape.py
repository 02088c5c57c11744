"""Every function in cnnlab/ fits on a screen and takes few loose parameters (the house style): its body at
most 60 lines (docstring included) and at most 8 parameters besides self/cls, *args and **kwargs; more
belong in a small spec object."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cnnlab"
MAX_LINES, MAX_PARAMETERS = 60, 8


def functions() -> list[tuple[str, ast.FunctionDef]]:
    """(where, node) of every function and method in the package, nested ones included."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}", node))
    return found


def body_lines(node: ast.FunctionDef) -> int:
    return node.end_lineno - node.body[0].lineno + 1


def parameters(node: ast.FunctionDef) -> list[str]:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return [name for name in names if name not in ("self", "cls")]


def test_the_measures_count_what_they_say():
    source = "def f(self, a, b=1, *args, c, d=2, **kw):\n    '''doc'''\n    x = 1\n\n    return x\n"
    node = ast.parse(source).body[0]
    assert parameters(node) == ["a", "b", "c", "d"]
    assert body_lines(node) == 4
    assert len(functions()) > 500  # the walk reaches the package's functions, methods and nested ones


def test_no_function_is_longer_than_a_screen():
    long = [f"{where}: {body_lines(node)} lines" for where, node in functions() if body_lines(node) > MAX_LINES]
    assert not long, f"split these into named parts (at most {MAX_LINES} lines): {long}"


def test_no_function_has_more_than_eight_loose_parameters():
    many = [f"{where}: {len(parameters(n))}" for where, n in functions() if len(parameters(n)) > MAX_PARAMETERS]
    assert not many, f"group these parameters into a spec object (at most {MAX_PARAMETERS}): {many}"
