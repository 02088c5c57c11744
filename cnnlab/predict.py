"""Apply a trained run to new images, and export it.

    model = cnnlab.load("runs/fast")
    model.predict(["cat.png", pil_image, uint8_array])      # -> probabilities, (N, classes)

The preprocessing is the run's own, read from its config.json: decode to RGB, resize to the stored
image size, upscale to the input size on the device, rescale or normalise, and flip TTA (with its
translated views, tta_translate; for the least confident tta_share of each batch) if the run evaluated with
it; an export gives every image the views. The probabilities are calibrated: the
logits are divided by the temperature fitted on the run's validation split (cnnlab/calibration.py),
which changes no prediction; a run trained with --no-calibrate or without validation has none (1).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps

from . import runs
from .data.decode import decode_file, fit_image
from .data.folder import is_image_name
from .data.preprocess import Preprocess, Preprocessing
from .device import use_bf16
from .errors import CnnlabError, DataError
from .evaluation import TestTimeAugmentation, infer, tta_logits
from .files import write_atomic
from .pipeline import load_trained


@dataclass
class Prediction:
    source: str
    probabilities: np.ndarray | None = None
    error: str | None = None

    def top(self, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities)[:k]
        return [(classes[i], float(self.probabilities[i])) for i in order]


class Predictor:
    """A trained run, ready to classify images (file paths, PIL images or uint8 HxWx3 arrays)."""

    def __init__(
        self,
        model: nn.Module,
        classes: list[str],
        preprocessing: Preprocessing | dict,
        tta: TestTimeAugmentation,
        bf16: bool,
        batch_size: int = 256,
        temperature: float = 1.0,
    ):
        if isinstance(preprocessing, dict):  # as saved in a run's config.json
            preprocessing = Preprocessing.from_dict(preprocessing)
        self.model, self.classes, self.prep = model.eval(), classes, preprocessing
        self.tta, self.bf16, self.batch_size = tta, bf16, batch_size
        self.temperature = temperature  # the logits' divisor: the run's calibration (1: raw probabilities)
        self.device = next(model.parameters()).device
        self.preprocess = Preprocess(preprocessing).to(self.device)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.prep.image_size

    def to_array(self, image: Any) -> np.ndarray:
        """One image as uint8 (H, W, 3) at the run's stored image size, decoded as the run's images were."""
        size, how, resize, exif = self.image_size, self.prep.interpolation, self.prep.resize, self.prep.exif
        if isinstance(image, (str, os.PathLike)):
            return decode_file(os.fspath(image), size, how, resize, exif)
        if isinstance(image, Image.Image):
            return fit_image(ImageOps.exif_transpose(image) if exif else image, size, how, resize)
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            raise DataError(f"expected a uint8 HxWx3 array, got {array.dtype} {array.shape}")
        if array.shape[:2] != size:
            return fit_image(Image.fromarray(array), size, how, resize)
        return array

    @torch.no_grad()
    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, classes) for uint8 (N, H, W, 3) images at the stored size."""
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + self.batch_size])).to(self.device)
            inputs = self.preprocess(batch)
            logits = infer(self.model, inputs, self.bf16, self.tta)
            out.append(torch.softmax(logits / self.temperature, 1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def predict(self, images: Any) -> np.ndarray:
        """Probabilities (N, classes); `images` is a list of paths / PIL images / arrays, or a uint8
        (N, H, W, 3) array. A bad image raises DataError naming it."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            arrays = np.stack([self.to_array(a) for a in images]) if images.shape[1:3] != self.image_size else images
        else:
            if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray)):
                images = [images]
            arrays = (
                np.stack([self.to_array(img) for img in images])
                if len(images)
                else np.zeros((0, *self.image_size, 3), dtype=np.uint8)
            )
        return self.predict_arrays(arrays)

    def predict_files(self, paths: Iterable[str]) -> list[Prediction]:
        """One Prediction per file; a file that cannot be read gets its error, the rest go on."""
        results, arrays, good = [], [], []
        for path in paths:
            try:
                arrays.append(self.to_array(path))
                good.append(len(results))
                results.append(Prediction(path))
            except DataError as exc:
                results.append(Prediction(path, error=str(exc)))
        if arrays:
            probabilities = self.predict_arrays(np.stack(arrays))
            for index, probs in zip(good, probabilities):
                results[index].probabilities = probs
        return results


def load(
    run_dir: str, device: str | None = None, batch_size: int = 0, precision: str | None = None, calibrated: bool = True
) -> Predictor:
    """A finished run as a Predictor (`cnnlab.load`). It computes as `cnnlab evaluate` does on this
    machine: batches of the run's eval_batch_size, in the run's precision (`auto`: bf16 autocast where the
    hardware has bf16 units, fp32 elsewhere), unless `precision` ("fp32" or "bf16") says otherwise.
    Exported models always compute in fp32: compare them with precision="fp32". `calibrated`: divide the
    logits by the run's temperature (runs.temperature; 1 where it has none); False gives the raw softmax."""
    model, cfg, run = load_trained(run_dir, torch.device(device) if device else None)
    dev = next(model.parameters()).device
    if precision not in (None, "auto", "fp32", "bf16"):
        raise CnnlabError(f"precision {precision!r}: use auto, fp32 or bf16")
    return Predictor(
        model,
        run["data"]["classes"],
        Preprocessing.from_dict(run["data"]["preprocessing"]),
        TestTimeAugmentation.of(cfg),
        use_bf16(precision or cfg.precision, dev),
        batch_size or cfg.eval_batch_size,
        (runs.temperature(run) or 1.0) if calibrated else 1.0,
    )


def collect_images(targets: Sequence[str]) -> list[str]:
    """Files named directly, plus the image files under named folders (sorted, nested included)."""
    files = []
    for target in targets:
        if os.path.isdir(target):
            found = [
                os.path.join(folder, name)
                for folder, _, names in os.walk(target)
                for name in names
                if is_image_name(name)
            ]
            files.extend(sorted(found))
        elif os.path.lexists(target):
            files.append(target)
        else:
            raise CnnlabError(f"{target}: no such file or folder")
    return files


class ExportModule(nn.Module):
    """uint8 NHWC images at the run's stored size -> class probabilities, preprocessing inside, fp32; every
    image gets the run's test-time augmentation views, whatever its tta_share: a trace would fix the images
    chosen by confidence to those of its example."""

    def __init__(self, predictor: Predictor):
        super().__init__()
        self.model = predictor.model.float().cpu().eval().requires_grad_(False)
        self.preprocess = Preprocess(predictor.prep)
        self.tta = dataclasses.replace(predictor.tta, share=1.0)
        self.temperature = float(predictor.temperature)  # a constant of the traced graph

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = tta_logits(self.model, self.preprocess(images), self.tta)
        return torch.softmax(logits / self.temperature, 1)


def export(run_dir: str, out: str, fmt: str, calibrated: bool = True) -> str:
    """Write the run as ONNX or TorchScript to `out` (written whole or not at all); its probabilities are
    the run's calibrated ones unless `calibrated` is False."""
    predictor = load(run_dir, device="cpu", precision="fp32", calibrated=calibrated)
    module = ExportModule(predictor).eval()
    height, width = predictor.image_size
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    with warnings.catch_warnings():
        # torch marks torch.jit and its TorchScript-based ONNX exporter deprecated; both still work
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        # the trace fixes the size test of the resize: right, the graph takes images at the run's size only
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"cnnlab\.data\.preprocess")
        # the ONNX exporter's note on a slice it leaves to the runtime (a step other than 1): nothing to act on
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        if fmt == "onnx":
            try:
                import onnx  # noqa: F401  (torch's exporter writes through it)
            except ImportError:
                raise CnnlabError(
                    "ONNX export needs the onnx package: pip install onnx onnxruntime (cnnlab's extra 'export')"
                ) from None

            def write(fh) -> None:
                torch.onnx.export(
                    module,
                    (example,),
                    fh,
                    input_names=["images"],
                    output_names=["probabilities"],
                    dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
                    opset_version=17,
                    dynamo=False,
                )
        elif fmt == "torchscript":

            def write(fh) -> None:
                with torch.no_grad():
                    torch.jit.save(torch.jit.trace(module, example), fh)
        else:
            raise CnnlabError(f"unknown export format {fmt!r}; use onnx or torchscript")
        write_atomic(out, write)
    return out
