"""Model registry and the registered networks."""

from . import alexnet, fastnet  # noqa: F401  (registers the models)
from .pretrained import create_pretrained, head_parameter_names, read_state_dict, transfer_weights
from .registry import create_model, default_input_size, input_config, list_models, register_model
from .summary import count_params, summary

__all__ = [
    "count_params",
    "create_model",
    "create_pretrained",
    "default_input_size",
    "head_parameter_names",
    "input_config",
    "list_models",
    "read_state_dict",
    "register_model",
    "summary",
    "transfer_weights",
]
