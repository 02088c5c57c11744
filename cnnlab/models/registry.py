"""Model registry in the manner of timm: `@register_model` + `create_model(name, **kwargs)`."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_INPUT_SIZES: dict[str, int] = {}


def register_model(input_size: int) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model constructor under its function name; `input_size` is its natural input side."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _MODELS[fn.__name__] = fn
        _INPUT_SIZES[fn.__name__] = input_size
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def default_input_size(name: str) -> int:
    _check(name)
    return _INPUT_SIZES[name]


def _check(name: str) -> None:
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    _check(name)
    return _MODELS[name](num_classes=num_classes, **kwargs)
