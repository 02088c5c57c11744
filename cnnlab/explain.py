"""Grad-CAM (Selvaraju et al. 2017): where in an image a network found the evidence for a class.

    cams = grad_cam(model, inputs, [predicted, true])     # one (N, H, W) map in [0, 1] per target

For a chosen layer with activations A (N, C, h, w) and a class score y_c (its logit), the map is
ReLU(sum_k alpha_k A_k) with alpha_k = the spatial mean of dy_c / dA_k, upsampled (bilinear) to the
input size and divided by its maximum. The layer is found by `cam_layer`: the last module to finish
whose output is a 4-D (N, C, H, W) tensor with H * W > 1, pooling layers left out (their output is a
coarser copy of their input's). For cnnlab's networks that is the last conv block before the global pool
or flatten; for timm CNNs the last stage. Models whose 4-D activations are channels-last (N, H, W, C),
as timm's vision transformers, need the layer named (`layer=`, `--cam-layer NAME`).

The model is run in eval mode and fp32, once for all targets; the gradients are taken with respect to
the input (torch.autograd.grad), so no parameter's .grad is written, and the model's mode is restored.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import CnnlabError
from .pages import png_uri


@dataclass
class CamMaps:
    """Grad-CAM maps of one batch: `maps[t]` (N, H, W) in [0, 1] at the input size for target t;
    `raw[t]` (N, h, w) ReLU(sum_k alpha_k A_k) at the layer's resolution; `layer` the module's name."""

    layer: str
    maps: list[torch.Tensor]
    raw: list[torch.Tensor]


def _is_pool(module: nn.Module) -> bool:
    return "pool" in type(module).__name__.lower()


def _feature_modules(model: nn.Module, inputs: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every submodule whose output is a tensor, in the order they finish."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if name and not _is_pool(module):
            handles.append(
                module.register_forward_hook(
                    lambda _m, _i, out, name=name: (
                        seen.append((name, tuple(out.shape))) if isinstance(out, torch.Tensor) else None
                    )
                )
            )
    try:
        with torch.no_grad():
            model(inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    return seen


def cam_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """The name of the layer Grad-CAM reads: the last (non-pooling) module to finish whose output is
    4-D with a spatial size above 1x1. Raises CnnlabError when there is none."""
    was_training = model.training
    model.eval()
    try:
        found = [name for name, shape in _feature_modules(model, inputs) if len(shape) == 4 and shape[2] * shape[3] > 1]
    finally:
        model.train(was_training)
    if not found:
        raise CnnlabError(
            f"{type(model).__name__}: no layer gives a 4-D (N, C, H, W) map larger than 1x1; name one with --cam-layer"
        )
    return found[-1]


def _module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        close = [n for n in modules if n and name in n][:5]
        raise CnnlabError(
            f"--cam-layer {name!r}: no such module in {type(model).__name__}"
            + (f"; close names: {', '.join(close)}" if close else "; see `cnnlab summary MODEL`")
        )
    return modules[name]


def grad_cam(
    model: nn.Module, inputs: torch.Tensor, targets: Sequence[torch.Tensor] | torch.Tensor, layer: str | None = None
) -> CamMaps:
    """Grad-CAM maps of `inputs` (normalised float NCHW) for each target: a class index per image (long (N,)).
    `layer`: a module name (model.named_modules()); default `cam_layer`'s choice."""
    targets = [targets] if isinstance(targets, torch.Tensor) else list(targets)
    name = layer or cam_layer(model, inputs)
    captured: list[torch.Tensor] = []
    grads: dict[int, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        if not (isinstance(output, torch.Tensor) and output.dim() == 4):
            raise CnnlabError(f"--cam-layer {name!r}: its output is not a 4-D (N, C, H, W) tensor")
        captured.append(output.detach().clone())  # a later in-place op (ReLU(inplace=True)) cannot change it
        # a hook registered before any in-place change receives the gradient of this value
        if output.requires_grad:
            output.register_hook(lambda grad, at=len(captured) - 1: grads.__setitem__(at, grad))

    was_training = model.training
    handle = _module(model, name).register_forward_hook(keep)
    model.eval()
    try:
        with torch.enable_grad():
            x = inputs.detach().float().requires_grad_(True)
            logits = model(x).float()
            raw = []
            for index, target in enumerate(targets):
                score = logits.gather(1, target.to(logits.device).view(-1, 1)).sum()
                grads.clear()
                torch.autograd.grad(score, x, retain_graph=index < len(targets) - 1)
                if len(captured) - 1 not in grads:
                    raise CnnlabError(f"--cam-layer {name!r}: the class scores do not depend on its output")
                activation, grad = captured[-1], grads[len(captured) - 1]
                weights = grad.float().mean((2, 3), keepdim=True)
                raw.append(F.relu((weights * activation.float()).sum(1)).detach())
    finally:
        handle.remove()
        model.train(was_training)
    maps = [_upsample(r, tuple(inputs.shape[-2:])) for r in raw]
    return CamMaps(name, maps, raw)


def _upsample(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) -> (N, H, W) bilinear, each map divided by its maximum (an all-zero map stays zero)."""
    up = F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = up.amax((1, 2), keepdim=True)
    return torch.where(peak > 0, up / peak.clamp(min=1e-12), torch.zeros_like(up))


def heat_colors(cam: np.ndarray) -> np.ndarray:
    """float (H, W) in [0, 1] -> uint8 (H, W, 3), a jet-like colour scale (blue low, red high)."""
    x = np.clip(cam, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * x - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, side: int = 96, alpha: float = 0.5) -> np.ndarray:
    """uint8 (side, side', 3): `image` (uint8 HxWx3) enlarged (nearest) with `cam` (float (h, w)) resized
    (bilinear) over it, `alpha` of the heat colours."""
    big = enlarge(image, side)
    heat = F.interpolate(
        torch.as_tensor(cam, dtype=torch.float32)[None, None], size=big.shape[:2], mode="bilinear", align_corners=False
    )[0, 0].numpy()
    return ((1 - alpha) * big + alpha * heat_colors(heat)).round().astype(np.uint8)


def enlarge(image: np.ndarray, side: int = 96) -> np.ndarray:
    """uint8 HxWx3 scaled by nearest neighbour so that its height is `side` (never made smaller)."""
    from PIL import Image

    height, width = image.shape[:2]
    if height >= side:
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(image).resize((round(width * side / height), side), Image.NEAREST))


def captioned(panel: np.ndarray, text: str, height: int = 20) -> np.ndarray:
    """uint8 HxWx3 `panel` above a white strip of `height` pixels holding `text` in black (cut with an
    ellipsis where it is wider than the panel)."""
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (panel.shape[1], height), "white")
    draw = ImageDraw.Draw(strip)
    try:  # Pillow's own scalable font (with FreeType); its bitmap font where FreeType is missing
        font = ImageFont.load_default(size=height - 7)
    except (ImportError, OSError, TypeError):  # TypeError: Pillow < 10.1 takes no size
        font = ImageFont.load_default()
    ellipsis = "…"
    if not isinstance(font, ImageFont.FreeTypeFont):  # the bitmap font knows latin-1 only
        text, ellipsis = text.encode("latin-1", "replace").decode("latin-1"), "..."
    room = panel.shape[1] - 8
    while text and draw.textlength(text, font=font) > room:
        text = text[: -len(ellipsis) - 1] + ellipsis if len(text) > len(ellipsis) + 1 else ""
    draw.text((4, 3), text, fill="black", font=font)
    return np.concatenate([panel, np.asarray(strip)], axis=0)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(image: np.ndarray) -> str:
    """A PNG of uint8 HxWx3 `image` as a data: URI, for a page that loads nothing from elsewhere."""
    return png_uri(png_bytes(image))


def explain_batches(
    model: nn.Module, batches: Iterable[torch.Tensor], targets: Sequence[torch.Tensor], layer: str | None = None
) -> CamMaps:
    """grad_cam over input batches in turn (memory bounded by one batch's activations and gradients);
    `targets` hold one class per image of all batches together. Maps on the CPU."""
    parts, start = [], 0
    for inputs in batches:
        layer = layer or cam_layer(model, inputs[:1])
        stop = start + len(inputs)
        parts.append(grad_cam(model, inputs, [t[start:stop] for t in targets], layer))
        start = stop
    if not parts:
        return CamMaps(layer or "", [torch.zeros(0, 0, 0) for _ in targets], [torch.zeros(0, 0, 0) for _ in targets])
    return CamMaps(
        parts[0].layer,
        [torch.cat([p.maps[t].cpu() for p in parts]) for t in range(len(targets))],
        [torch.cat([p.raw[t].cpu() for p in parts]) for t in range(len(targets))],
    )


def explain_files(
    predictor,
    paths: Sequence[str],
    probabilities: Sequence[np.ndarray],
    out_dir: str,
    layer: str | None = None,
    batch_size: int = 32,
) -> list[str]:
    """For `cnnlab predict --explain DIR`: one PNG per image, the image beside the Grad-CAM of its first and
    second most probable classes (`probabilities`: the predictor's, one row per path), each panel captioned
    (the file's name; the class and its probability). Returns the paths."""
    from .files import write_atomic

    if not paths:
        return []
    os.makedirs(out_dir, exist_ok=True)
    arrays = np.stack([predictor.to_array(p) for p in paths])
    order = np.argsort(-np.stack(probabilities), axis=1, kind="stable")
    targets = [torch.from_numpy(order[:, k].copy()) for k in range(min(2, order.shape[1]))]
    batches = (
        predictor.preprocess(torch.from_numpy(arrays[start : start + batch_size]).to(predictor.device))
        for start in range(0, len(arrays), batch_size)
    )
    cams = explain_batches(predictor.model, batches, targets, layer)
    written = []
    for index, path in enumerate(paths):
        stem = os.path.splitext(os.path.basename(path))[0]
        panels = [captioned(enlarge(arrays[index], 128), os.path.basename(path))]
        for k, maps in enumerate(cams.maps):
            label = int(targets[k][index])
            caption = f"{predictor.classes[label]} {100 * probabilities[index][label]:.0f}%"
            panels.append(captioned(overlay(arrays[index], maps[index].numpy(), 128), caption))
        target = os.path.join(out_dir, f"{index:04d}_{stem}_cam.png")
        write_atomic(target, png_bytes(np.concatenate(panels, axis=1)))
        written.append(target)
    return written
