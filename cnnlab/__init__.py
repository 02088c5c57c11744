"""cnnlab: train and compare image classifiers on image-folder datasets.

The public names are imported on first use (PEP 562), so `import cnnlab` loads neither torch nor
matplotlib and changes no global state; `from cnnlab import train` imports what `train` needs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

# Each public name and the submodule that defines it.
_SOURCES = {
    "PRESETS": "presets",
    "Config": "config",
    "parse_config": "config",
    "preset": "presets",
    "load_dataset": "data",
    "CnnlabError": "errors",
    "ConfigError": "errors",
    "DataError": "errors",
    "TestTimeAugmentation": "evaluation",
    "evaluate": "evaluation",
    "infer": "evaluation",
    "create_model": "models",
    "list_models": "models",
    "summary": "models",
    "evaluate_run": "pipeline",
    "load_trained": "pipeline",
    "train_run": "pipeline",
    "Predictor": "predict",
    "export": "predict",
    "load": "predict",
    "Callback": "training",
    "StopTraining": "training",
    "train": "training",
}

__all__ = sorted(_SOURCES)

if TYPE_CHECKING:  # for type checkers and editors; never run
    from .config import Config, parse_config  # noqa: F401
    from .data import load_dataset  # noqa: F401
    from .errors import CnnlabError, ConfigError, DataError  # noqa: F401
    from .evaluation import TestTimeAugmentation, evaluate, infer  # noqa: F401
    from .models import create_model, list_models, summary  # noqa: F401
    from .pipeline import evaluate_run, load_trained, train_run  # noqa: F401
    from .predict import Predictor, export, load  # noqa: F401
    from .presets import PRESETS, preset  # noqa: F401
    from .training import Callback, StopTraining, train  # noqa: F401


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{source}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
