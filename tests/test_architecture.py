"""Imports point one way: pyproject.toml's [tool.importlinter] contracts (the layers of CONTRIBUTING.md, the
data apart from the networks, the modules of a sweep and of the data check, a light config), checked by
import-linter on every import in cnnlab, those inside functions too; and every module has its place in them."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_are_kept():
    # the command .ci/run runs, from the environment running the tests, on this checkout's cnnlab
    command = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert command, "lint-imports not found: pip install -e '.[test]' (import-linter)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([command, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True)
    report = done.stdout[done.stdout.find("Broken contracts") :] + done.stderr  # those broken, and by which imports
    assert done.returncode == 0, report


def modules_in(folder: pathlib.Path) -> set[str]:
    """The modules and subpackages directly in a package folder, by name."""
    return {
        p.stem
        for p in folder.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }


def test_every_module_has_a_layer():
    # a module in no layer escapes its contract: it may import any module, and be imported by any
    for contract in (c for c in CONTRACTS if c["type"] == "layers"):
        named = {name.strip() for layer in contract["layers"] for name in re.split(r"[|:]", layer)}
        containers = contract.get("containers")  # the layers' names are relative to these; else full names
        for container in containers or ["cnnlab"]:
            prefix = "" if containers else f"{container}."
            folder = ROOT.joinpath(*container.split("."))
            missing = sorted(f"{prefix}{m}" for m in modules_in(folder) if f"{prefix}{m}" not in named)
            assert missing == [], f"{container}: {missing} in no layer of contract {contract['id']!r} (pyproject.toml)"
