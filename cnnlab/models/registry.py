"""Model registry in the manner of timm: `@register_model` + `create_model(name, **kwargs)`.

Besides cnnlab's own networks, any timm model by name: `timm/resnet18`, `timm/convnext_tiny.fb_in22k`
(the optional extra `cnnlab[timm]`). Such a model brings its own input size and normalisation
(`input_config`); its pretrained weights are loaded by `pretrained.load_pretrained`, never downloaded.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from ..errors import ConfigError, first_line

TIMM_PREFIX = "timm/"

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
    """cnnlab's own models; any timm model is also accepted as `timm/NAME`."""
    return sorted(_MODELS)


def is_timm(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def import_timm() -> Any:
    """The timm module, or a one-line error saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ConfigError(
            "timm models (--model timm/NAME) need timm: pip install timm (cnnlab's extra 'timm')"
        ) from None
    except Exception as exc:  # e.g. a torchvision built for another torch ("operator torchvision::nms does not exist")
        raise ConfigError(
            f"timm is installed but cannot be imported ({first_line(exc, 200)}); install the "
            "torchvision release made for this torch"
        ) from None
    return timm


def _timm_arch(name: str) -> str:
    """`timm/resnet18.a1_in1k` -> `resnet18.a1_in1k`, checked against timm's registry."""
    timm = import_timm()
    arch = name[len(TIMM_PREFIX) :]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch.split(".")[0], timm.list_models(), n=5)
        hint = f"close names: {', '.join(close)}" if close else "see timm.list_models()"
        raise ConfigError(f"unknown timm model {arch!r}; {hint}")
    return arch


def _check(name: str) -> None:
    if is_timm(name):
        _timm_arch(name)
    elif name not in _MODELS:
        raise ConfigError(
            f"unknown model {name!r}; known models: {', '.join(list_models())} (or any timm model as timm/NAME)"
        )


def input_config(name: str) -> dict[str, Any]:
    """What the model expects: input_size (height, width), and for a timm model its pretrained weights'
    mean and std (of x/255, per RGB channel), resize interpolation and crop_pct (the side ratio its
    evaluation resize leaves around the centre crop). cnnlab's own models train from scratch, so
    their mean/std are the dataset's (None here)."""
    _check(name)
    if not is_timm(name):
        side = _INPUT_SIZES[name]
        return {"input_size": (side, side), "mean": None, "std": None, "interpolation": None, "crop_pct": None}
    timm = import_timm()
    cfg = timm.get_pretrained_cfg(_timm_arch(name))
    if cfg is None:  # an architecture without published weights: timm's ImageNet defaults
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        return {
            "input_size": (224, 224),
            "mean": tuple(IMAGENET_DEFAULT_MEAN),
            "std": tuple(IMAGENET_DEFAULT_STD),
            "interpolation": "bicubic",
            "crop_pct": 0.875,
        }
    return {
        "input_size": tuple(cfg.input_size[1:]),
        "mean": tuple(cfg.mean),
        "std": tuple(cfg.std),
        "interpolation": cfg.interpolation,
        "crop_pct": cfg.crop_pct,
    }


def default_input_size(name: str) -> int:
    return input_config(name)["input_size"][0]


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """A new model with random weights (pretrained weights: `pretrained.load_pretrained`)."""
    _check(name)
    if is_timm(name):
        return import_timm().create_model(_timm_arch(name), pretrained=False, num_classes=num_classes, **kwargs)
    return _MODELS[name](num_classes=num_classes, **kwargs)
