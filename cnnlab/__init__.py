"""cnnlab: train and compare image classifiers on image-folder datasets."""
from .version import __version__  # noqa: F401
from .config import PRESETS, Config, parse_config, preset  # noqa: E402
from .data import load_dataset  # noqa: E402
from .errors import CnnlabError, ConfigError, DataError  # noqa: E402
from .evaluate import evaluate, infer  # noqa: E402
from .models import create_model, list_models, summary  # noqa: E402
from .pipeline import evaluate_run, load_trained, train_run  # noqa: E402
from .predict import Predictor, export, load  # noqa: E402
from .train import Callback, StopTraining, train  # noqa: E402

__all__ = ["PRESETS", "Callback", "CnnlabError", "Config", "ConfigError", "DataError", "Predictor", "StopTraining",
           "create_model", "evaluate", "evaluate_run", "infer", "export", "list_models", "load", "load_dataset", "load_trained",
           "parse_config", "preset", "summary", "train", "train_run"]
