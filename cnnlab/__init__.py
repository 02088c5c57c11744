"""cnnlab: train and compare image classifiers on image-folder datasets.

The public names are imported on first use (PEP 562), so `import cnnlab` loads neither torch nor
matplotlib and changes no global state; `from cnnlab import train` imports what `train` needs."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

# Each public name and the submodule that defines it.
_SOURCES = {
    "PRESETS": "config",
    "Config": "config",
    "parse_config": "config",
    "preset": "config",
    "load_dataset": "data",
    "CnnlabError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "evaluate": "evaluate",
    "infer": "evaluate",
    "create_model": "models",
    "list_models": "models",
    "summary": "models",
    "evaluate_run": "pipeline",
    "load_trained": "pipeline",
    "train_run": "pipeline",
    "Predictor": "predict",
    "export": "predict",
    "load": "predict",
    "Callback": "train",
    "StopTraining": "train",
    "train": "train",
}

__all__ = sorted(_SOURCES)

if TYPE_CHECKING:  # for type checkers and editors; never run
    from .config import PRESETS, Config, parse_config, preset  # noqa: F401
    from .data import load_dataset  # noqa: F401
    from .errors import CnnlabError, ConfigError, DataError  # noqa: F401
    from .evaluate import evaluate, infer  # noqa: F401
    from .models import create_model, list_models, summary  # noqa: F401
    from .pipeline import evaluate_run, load_trained, train_run  # noqa: F401
    from .predict import Predictor, export, load  # noqa: F401
    from .train import Callback, StopTraining, train  # noqa: F401


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{source}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _function_named_as_its_module(name: str) -> property:
    """`cnnlab.train` and `cnnlab.evaluate` are the functions, as they were when this file imported them
    eagerly, even after the submodules of the same names are imported (which sets them on the package)."""
    assigned: dict[str, Any] = {}

    def get(module: types.ModuleType) -> Any:
        if name in assigned:
            return assigned[name]
        return getattr(importlib.import_module(f".{name}", __name__), name)

    def set_(module: types.ModuleType, value: Any) -> None:
        if not isinstance(value, types.ModuleType):  # the import system sets the submodule: keep the function
            assigned[name] = value

    return property(get, set_)


class _Package(types.ModuleType):
    train = _function_named_as_its_module("train")
    evaluate = _function_named_as_its_module("evaluate")


sys.modules[__name__].__class__ = _Package
