"""A Keras-style model summary: layer, output shape (None, H, W, C as Keras prints it), params."""

from __future__ import annotations

import torch
import torch.nn as nn

_ACTIVATIONS = (nn.ReLU, nn.GELU, nn.Identity)


def count_params(model: nn.Module) -> dict[str, int]:
    """Keras's counts: trainable weights; non-trainable = frozen weights + BN moving mean/variance."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    stats = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return {"total": trainable + frozen + stats, "trainable": trainable, "non_trainable": frozen + stats}


def _own_count(module: nn.Module) -> int:
    own = sum(p.numel() for p in module.parameters(recurse=False))
    return own + sum(b.numel() for n, b in module.named_buffers(recurse=False) if n in ("running_mean", "running_var"))


def _keras_shape(shape: torch.Size) -> str:
    dims = list(shape[1:])
    if len(dims) == 3:  # NCHW -> Keras's (None, H, W, C)
        dims = [dims[1], dims[2], dims[0]]
    return "(" + ", ".join(["None"] + [str(d) for d in dims]) + ")"


def summary(model: nn.Module, input_size: int | tuple[int, int] | list[int], channels: int = 3) -> str:
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    rows: list[tuple[str, str, int]] = []
    hooks = []
    counters: dict[str, int] = {}
    for module in model.modules():
        if list(module.children()) or isinstance(module, _ACTIVATIONS):
            continue

        def hook(mod, _inputs, output, _name=type(module).__name__):
            counters[_name] = counters.get(_name, 0) + 1
            rows.append((f"{_name.lower()}_{counters[_name]} ({_name})", _keras_shape(output.shape), _own_count(mod)))

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, height, width))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    width = max(len(r[0]) for r in rows) + 2
    lines = [
        f'Model: "{type(model).__name__}"',
        "_" * (width + 40),
        f"{'Layer (type)':<{width}}{'Output Shape':<26}{'Param #':>12}",
        "=" * (width + 40),
    ]
    lines += [f"{name:<{width}}{shape:<26}{params:>12,}" for name, shape, params in rows]
    counts = count_params(model)
    lines += [
        "=" * (width + 40),
        f"Total params: {counts['total']:,}",
        f"Trainable params: {counts['trainable']:,}",
        f"Non-trainable params: {counts['non_trainable']:,}",
        "_" * (width + 40),
    ]
    return "\n".join(lines)
