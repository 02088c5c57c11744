"""`import cnnlab` is light and changes nothing; `cnnlab --help` loads neither torch nor matplotlib; the
public names resolve on first use. Each check runs in a fresh interpreter, since this one has imported
everything already."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLI = "import sys; from cnnlab.cli import main; sys.argv[0] = 'cnnlab'; sys.exit(main())"  # the console script
HEAVY = ("torch", "matplotlib")


def python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=True, cwd=ROOT)


def imported_modules(importtime_stderr: str) -> set[str]:
    """The module names in `python -X importtime` output (one `import time: self | cumulative | name` a line)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names - {"imported package"}


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "cnnlab", "--help"],
        ["-c", CLI, "--help"],
        ["-c", CLI, "train", "--help"],
        ["-m", "cnnlab", "sweep", "--help"],
        ["-c", "import cnnlab"],
    ],
    ids=["-m cnnlab --help", "cnnlab --help", "cnnlab train --help", "-m cnnlab sweep --help", "import cnnlab"],
)
def test_help_and_import_load_neither_torch_nor_matplotlib(command):
    done = python("-X", "importtime", *command)
    modules = imported_modules(done.stderr)
    assert "cnnlab" in modules  # the parse found the package itself
    assert sorted({m.split(".")[0] for m in modules} & set(HEAVY)) == []


def test_help_lists_the_subcommands():
    done = python("-m", "cnnlab", "--help")
    assert done.stdout.startswith("usage: cnnlab")
    for command in ("train", "sweep", "report", "evaluate", "predict", "export", "data", "cache", "models", "summary"):
        assert command in done.stdout


def test_version_flag_prints_the_package_version():
    from cnnlab.version import __version__

    assert python("-m", "cnnlab", "--version").stdout == f"cnnlab {__version__}\n"
    assert python("-c", CLI, "--version").stdout == f"cnnlab {__version__}\n"
    parts = __version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)


def test_import_and_plotting_leave_matplotlibs_backend_alone(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    alone = python("-c", "import matplotlib; print(matplotlib.get_backend())", env=env).stdout
    assert python("-c", "import cnnlab, matplotlib; print(matplotlib.get_backend())", env=env).stdout == alone
    draw = (
        f"import sys, matplotlib; from cnnlab import plots; "
        f"plots.plot_confusion([[1, 0], [0, 1]], ['a', 'b'], {str(tmp_path / 'c.png')!r}); "
        f"print('matplotlib.pyplot' in sys.modules); print(matplotlib.get_backend())"
    )
    assert python("-c", draw, env=env).stdout == "False\n" + alone  # no pyplot, no backend chosen
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")


# Process-wide settings a library could change on import: torch's flags, threads, default dtype, matplotlib's
# backend and rcParams, Python's warning filters, the environment.
SNAPSHOT = """
def snapshot():
    import os, warnings, matplotlib, torch
    return {"cudnn.benchmark": torch.backends.cudnn.benchmark, "cudnn.deterministic": torch.backends.cudnn.deterministic,
            "cudnn.enabled": torch.backends.cudnn.enabled, "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "matmul_precision": torch.get_float32_matmul_precision(),
            "deterministic": torch.are_deterministic_algorithms_enabled(), "threads": torch.get_num_threads(),
            "dtype": str(torch.get_default_dtype()), "grad": torch.is_grad_enabled(),
            "rcParams": sorted((k, repr(v)) for k, v in dict.items(matplotlib.rcParams)),  # backend unresolved
            "warnings": [repr(f) for f in warnings.filters], "environ": sorted(os.environ.items())}
"""


def test_import_and_every_public_name_change_no_global_state():
    script = (
        SNAPSHOT
        + """
import json, sys, types
import numpy, optuna, PIL.Image  # third-party imports that may set their own warning filters
before = snapshot()
import cnnlab
names = {name: type(getattr(cnnlab, name)).__name__ for name in cnnlab.__all__}
after = snapshot()
print(json.dumps({"changed": sorted(k for k in before if before[k] != after[k]), "names": names,
                  "pyplot": "matplotlib.pyplot" in sys.modules}))
"""
    )
    result = json.loads(python("-c", script).stdout)
    assert result["changed"] == []
    assert result["pyplot"] is False
    assert "module" not in result["names"].values() and len(result["names"]) == 23


def test_public_names_resolve_whatever_was_imported_first():
    script = """
import cnnlab.pipeline, cnnlab.evaluation, cnnlab.training
import cnnlab
from cnnlab import *
from cnnlab import train as t
from cnnlab.training import train as defined
print(t is defined is cnnlab.train, cnnlab.evaluate.__module__, callable(Config), sorted(set(cnnlab.__all__) - set(dir(cnnlab))))
"""
    assert python("-c", script).stdout == "True cnnlab.evaluation True []\n"


def test_no_public_name_is_a_submodule_of_the_same_name():
    """`import cnnlab.evaluate as ev` once gave a function (the package swapped its class to keep the functions):
    the modules are now training.py and evaluation.py, so no public name and submodule share a name."""
    import pkgutil

    import cnnlab

    submodules = {m.name for m in pkgutil.iter_modules(cnnlab.__path__)}
    assert submodules & set(cnnlab.__all__) == set()
    assert type(cnnlab) is type(pkgutil)  # a plain module


def test_an_unknown_name_is_an_attribute_error():
    import cnnlab

    with pytest.raises(AttributeError, match="has no attribute 'Trainer'"):
        cnnlab.Trainer  # noqa: B018
    assert not hasattr(cnnlab, "Trainer")
