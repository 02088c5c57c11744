"""Model registry and the registered networks."""
from . import alexnet, fastnet  # noqa: F401  (registers the models)
from .registry import create_model, default_input_size, list_models, register_model
from .summary import count_params, summary

__all__ = ["count_params", "create_model", "default_input_size", "list_models", "register_model", "summary"]
