"""Imports point one way: cli > predict/report/check/interpret > lrfind > pipeline > training/plots > evaluation/runs/explain >
data/models/config/device/stats/calibration > errors/files/pages."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cnnlab"
LAYERS = {
    "cli": 6,
    "predict": 5,
    "sweep": 5,
    "report": 5,
    "search": 5,
    "pipeline": 4,
    "studies": 4,
    "tracking": 3.5,
    "stats": 1,
    "calibration": 1,
    "training": 3,
    "plots": 3,
    "evaluation": 2,
    "runs": 2,
    "optim": 2,
    "data": 1,
    "models": 1,
    "config": 1,
    "presets": 1,
    "adaptation": 1,
    "device": 1,
    "errors": 0,
    "version": 0,
    "files": 0,
    "pages": 0,
    "explain": 2,
    "lrfind": 4.5,
    "check": 5,
    "interpret": 5,
    "distributed": 1,
    "__init__": 7,
    "__main__": 7,
}


def layer_of(path: pathlib.Path) -> tuple[str, int]:
    rel = path.relative_to(PACKAGE).with_suffix("")
    top = rel.parts[0]
    return top, LAYERS[top]


def test_no_module_imports_a_higher_layer():
    for path in PACKAGE.rglob("*.py"):
        name, level = layer_of(path)
        if name == "__init__":
            continue
        depth = len(path.relative_to(PACKAGE).parts)  # how many dots reach the package root
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                if node.level < depth:
                    continue  # within the same subpackage
                target = (node.module or "").split(".")[0] or None
                targets = [target] if target else [a.name for a in node.names]
                for t in targets:
                    assert LAYERS[t] <= level, f"{path.name} ({name}) imports {t}, a higher layer"
