"""Starting weights: a local weights file, the local Hugging Face / timm cache, or another model's state.

Nothing is downloaded at run time: `hub` reads only what is already on disk (huggingface_hub with
local_files_only=True, and torch.hub's checkpoints folder) and otherwise says where to put the file.
The classifier head is the one part a new dataset replaces: it keeps its fresh initialisation unless
the caller keeps it (same classes) and the shapes agree.
"""

from __future__ import annotations

import os
import urllib.parse

import torch
import torch.nn as nn

from ..errors import ConfigError, first_line
from .registry import _timm_arch, create_model, import_timm, is_timm

HUB = "hub"


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names (in model.named_parameters()) of the classifier head: timm's get_classifier(), else the last
    nn.Linear, as in fastnet's `head` and AlexNet's last dense layer."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Module):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            return []
        head = linears[-1]
    ids = {id(p) for p in head.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torch file (.pth/.pt/.bin; a checkpoint's 'state_dict' or 'model'
    is unwrapped, a DataParallel 'module.' prefix removed). torch files load with weights_only=True."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: weights file not found")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise many types for a foreign or damaged file
        raise ConfigError(f"{path}: not a weights file ({first_line(exc, 200)})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def transfer_weights(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, model_name: str, keep_head: bool
) -> list[str]:
    """Copy `state` into `model`: every tensor outside the head must be there with its shape; the head's
    are copied only with `keep_head` and matching shapes. Returns the names left at their fresh init."""
    head = set(head_parameter_names(model))
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in head and not k.endswith("num_batches_tracked")]
    wrong = [k for k in own if k in state and k not in head and state[k].shape != own[k].shape]
    extra = [k for k in state if k not in own]
    if missing or wrong or extra:
        detail = (
            f"missing {missing[0]!r}"
            if missing
            else f"{wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, not {tuple(own[wrong[0]].shape)}"
            if wrong
            else f"unexpected {extra[0]!r}"
        )
        raise ConfigError(
            f"{source}: these weights are not model {model_name!r}'s ({detail}); use weights of the same model"
        )
    fresh = [k for k in head if not (keep_head and k in state and state[k].shape == own[k].shape)]
    with torch.no_grad():
        for key, value in own.items():
            if key in state and key not in fresh:
                value.copy_(state[key])
    return fresh


def hub_file(name: str) -> str:
    """The local file of timm model `name`'s pretrained weights: in the Hugging Face cache ($HF_HOME,
    default ~/.cache/huggingface) or torch.hub's checkpoints folder ($TORCH_HOME). Never downloads."""
    arch = _timm_arch(name)
    timm = import_timm()
    cfg = timm.get_pretrained_cfg(arch)
    if cfg is None or not cfg.has_weights:
        raise ConfigError(f"model {name!r} has no published pretrained weights; use --pretrained PATH")
    hub_id = cfg.hf_hub_id
    if hub_id:
        from huggingface_hub import hf_hub_download

        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in filenames:
            try:
                return hf_hub_download(hub_id, filename, local_files_only=True)
            except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
                continue
    url_file = ""
    if cfg.url:
        url_file = os.path.join(
            torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlsplit(cfg.url).path)
        )
        if os.path.isfile(url_file):
            return url_file
    where = (
        f"the Hugging Face cache (run `hf download {hub_id}` where there is network, then copy "
        f"{os.environ.get('HF_HOME', '~/.cache/huggingface')} here)"
        if hub_id
        else url_file
    )
    raise ConfigError(
        f"model {name!r}: pretrained weights not on disk and cnnlab never downloads at run time; "
        f"put them in {where}, or pass --pretrained PATH to a .safetensors/.pth file"
    )


def create_pretrained(name: str, num_classes: int, source: str) -> nn.Module:
    """Model `name` with `num_classes` outputs, its weights from `source` (a file, or `hub` for a timm
    model's weights in the local cache) and a new classifier head."""
    if not is_timm(name):
        if source == HUB:
            raise ConfigError(
                f"model {name!r} has no published weights; pass --pretrained PATH to a weights "
                "file, or --init-from RUN_DIR to start from a cnnlab run"
            )
        model = create_model(name, num_classes=num_classes)
        transfer_weights(model, read_state_dict(source), source, name, keep_head=False)
        return model
    path = hub_file(name) if source == HUB else source
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: weights file not found; give --pretrained a .safetensors/.pth/.bin file")
    timm = import_timm()
    try:  # timm's own loader: unwraps checkpoints, applies the model's filter, drops a head of other size
        return timm.create_model(
            _timm_arch(name), pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": path}
        )
    except Exception as exc:  # torch's load_state_dict and timm's filters raise RuntimeError, KeyError, ...
        raise ConfigError(f"{path}: cannot load into model {name!r} ({first_line(exc, 200)})") from None
