"""One typed Config holding every knob, its default and its unit; its parsing and validation.

The defaults are the `fast` preset; the presets are in presets.py, the adaptation to the data in adaptation.py.
Every field becomes a CLI flag (`batch_size` -> `--batch-size`); nothing is configured by side effect.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError


class Size(str):
    """Annotation of an image size: a side in pixels (int) or "HxW" (str) when not square; 0 = automatic."""


def size_hw(value: int | str) -> tuple[int, int] | None:
    """(height, width) of a Size value, None for 0 (automatic)."""
    if isinstance(value, str):
        height, _, width = value.partition("x")
        return int(height), int(width)
    return (value, value) if value else None


def _size(key: str, value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", value)
        if match:
            height, width = int(match[1]), int(match[2] or match[1])
            if height == width:
                return height
            if height and width:
                return f"{height}x{width}"
    raise ConfigError(f"config key {key!r}: expected a side in pixels or HxW (e.g. 224 or 224x160), got {value!r}")


def _knob(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Config:
    # --- data ---
    data: str = _knob(
        "",
        "dataset root (train/ and test/ class folders, a class-folder root, or "
        "cifar-10-batches-py); default: $CNNLAB_DATA",
    )
    val_fraction: float = _knob(0.1, "fraction of each training class held out for validation (0 = none)")
    split: Literal["keras", "random"] = _knob(
        "random",
        "validation split: random = val_fraction of each class drawn at random with split_seed (stratified); "
        "keras = the first files of each class in sorted order, as Keras's flow_from_directory (file names "
        "often sort by source, so that split is rarely representative; the seed preset keeps it)",
    )
    split_seed: int = _knob(
        0,
        "seed of the random validation split and of --subset's sample, apart from the training seed: every "
        "seed of a sweep is scored on the same validation images",
    )
    folds: int = _knob(
        0,
        "k-fold cross-validation: the training images in this many stratified folds, fold `fold` "
        "the validation split (val_fraction then ignored; 0 = off)",
    )
    fold: int = _knob(0, "with folds: the fold held out for validation (0 .. folds-1)")
    fold_seed: int = _knob(
        0,
        "with folds: the seed of the fold assignment (a sweep's seed: every cell and seed of "
        "a sweep sees the same folds)",
    )
    image_size: Size = _knob(
        0,
        "size the images are decoded and cached at: SIDE or HxW (0 = the images' own size "
        "when they all have one, else the input size, else the model's)",
    )
    input_size: Size = _knob(0, "size fed to the model, SIDE or HxW, resized on the device per batch (0 = image_size)")
    resize: Literal["crop", "pad", "squash"] = _knob(
        "crop",
        "images of another shape than image_size: crop = scale the shorter side, centre-crop "
        "(torchvision's Resize+CenterCrop); pad = scale the longer side, pad with black; squash = stretch "
        "(Keras's flow_from_directory)",
    )
    interpolation: Literal["nearest", "bilinear"] = _knob(
        "bilinear", "resize method (bilinear: antialiased when shrinking; Keras's default is nearest)"
    )
    exif: bool = _knob(True, "turn photos upright by their EXIF orientation tag at decode (Keras does not)")
    scaling: Literal["rescale", "normalize", "model"] = _knob(
        "normalize",
        "rescale = x/255 (the study); normalize = (x/255 - mean)/std of the training images; model = "
        "with the mean/std the starting weights were trained with (the --init-from run's, a timm "
        "model's own), else as normalize",
    )
    skip_bad_images: bool = _knob(False, "skip (and list) images that cannot be decoded instead of stopping")
    subset: int = _knob(
        0,
        "use at most this many images of each split, evenly over classes, drawn at random with split_seed "
        "(with split keras: the first files of each class; 0 = all)",
    )
    # --- augmentation, applied on the device a batch at a time ---
    flip: bool = _knob(True, "random horizontal flip")
    flip_alternate: bool = _knob(
        True,
        "with flip: each training image mirrored in every other epoch, from a random "
        "start of its own, instead of at random each epoch (airbench's alternating "
        "flip: no image seen the same way twice running)",
    )
    translate: int = _knob(2, "random translation up to this many pixels, reflect padding (0 = off)")
    cutout: int = _knob(0, "side in pixels of a random square set to zero (0 = off)")
    brightness: float = _knob(
        0.0,
        "per-image brightness jitter: a shift drawn uniformly in [-b, b] added to the "
        "normalised inputs (hiverge's cifar10-speedrun: 0.14; 0 = off)",
    )
    contrast: float = _knob(
        0.0,
        "per-image contrast jitter: the normalised inputs (after the brightness shift) "
        "scaled by a factor drawn uniformly in [1 - c, 1 + c] (hiverge's cifar10-speedrun: "
        "0.13; 0 = off)",
    )
    rrc_scale_min: float = _knob(
        0.0,
        "random-resized-crop: a random crop of this fraction of the image area or "
        "more (aspect 3/4 to 4/3), resized to the input size (0 = off; finetune: 0.25)",
    )
    early_size: int = _knob(
        0,
        "progressive resizing: side in pixels the training inputs are downscaled to (bilinear, antialiased, "
        "after the other augmentation) in the first early_epochs epochs, for fewer FLOPs a step; below the "
        "input size, which must be square; evaluation always at the input size (0 = off)",
    )
    early_epochs: float = _knob(
        0.0,
        "with early_size: the epochs from the start trained at early_size, at most epochs (a fraction ends "
        "mid-epoch: the first round(early_epochs x steps an epoch) steps; 0 = off)",
    )
    # --- model ---
    model: str = _knob(
        "fastnet",
        "registered model name (see `cnnlab models`), or any timm model as timm/NAME (pip install timm)",
    )
    # --- fine-tuning: where the weights start, and how fast the pretrained part moves ---
    pretrained: str = _knob(
        "",
        "start from pretrained weights: a local .safetensors/.pth/.bin file, or hub = a timm "
        "model's weights already in the local Hugging Face/timm cache (never downloaded); "
        "the classifier head is new",
    )
    init_from: str = _knob(
        "",
        "start from the weights of a cnnlab run directory (same model; a new classifier head when the classes differ)",
    )
    backbone_lr_scale: float = _knob(
        1.0,
        "learning rate of every parameter but the classifier head, as a fraction "
        "of lr (finetune: 0.1; 0 = frozen backbone)",
    )
    # --- optimisation ---
    epochs: int = _knob(7, "passes over the training images")
    batch_size: int = _knob(512, "training images per step; steps per epoch = n // batch_size")
    optimizer: Literal["sgd", "adam", "adamw", "muon"] = _knob(
        "sgd",
        "optimizer (adamw: decoupled weight decay; muon: torch.optim.Muon for the conv filters, each "
        "filter's norm held fixed, Nesterov SGD for the other parameters)",
    )
    lr: float = _knob(0.4, "peak learning rate (with muon: of the SGD part)")
    momentum: float = _knob(0.9, "SGD momentum / Adam beta_1")
    nesterov: bool = _knob(True, "Nesterov momentum (SGD, and Muon's)")
    weight_decay: float = _knob(
        5e-4,
        "L2 weight decay (with muon: lr x decay, the same for every SGD group, as "
        "airbench sets it; the Muon filters have none)",
    )
    muon_lr: float = _knob(
        0.24,
        "peak learning rate of Muon's conv filters (optimizer muon; independent of the "
        "batch size: the updates are orthogonalised)",
    )
    muon_momentum: float = _knob(0.6, "Muon's momentum (optimizer muon)")
    adam_eps: float = _knob(1e-7, "Adam epsilon (Keras's default 1e-7)")
    schedule: Literal["constant", "onecycle", "cosine"] = _knob(
        "onecycle",
        "learning-rate schedule: constant; onecycle = linear warm-up then linear decay to 0; "
        "cosine = linear warm-up then half a cosine to 0",
    )
    warmup_epochs: float = _knob(2.0, "epochs of linear warm-up for onecycle and cosine")
    whiten_bias_epochs: float = _knob(
        0.0,
        "epochs the whitening layer's bias trains, its lr falling to 0 over them "
        "(airbench: 3); 0 = all epochs, as every other bias",
    )
    label_smoothing: float = _knob(0.2, "label smoothing of the cross-entropy loss")
    class_weight: Literal["none", "balanced"] = _knob(
        "none",
        "weight of each class in the loss: none = 1; balanced = n_images / (n_classes x images of the class) "
        "over the training split (scikit-learn's 'balanced'), so that every class weighs the same in all",
    )
    sampler: Literal["uniform", "balanced"] = _knob(
        "uniform",
        "order of the training images: uniform = each image once an epoch, shuffled; balanced = drawn "
        "with replacement, each class equally likely (same epoch length)",
    )
    tta: bool = _knob(True, "test-time augmentation: average the logits of each image and its mirror")
    tta_translate: int = _knob(
        1,
        "with tta, also the mirrored pairs of the image translated this many pixels "
        "down-right and up-left (reflect padded), weighted 1/4 each and the image's pair "
        "1/2, as airbench's TTA level 2 (1 pixel); 0 = off",
    )
    tta_share: float = _knob(
        1.0,
        "with tta, the fraction of each evaluation batch given the views: its least confident images by the "
        "plain prediction's top probability (ceil(share x batch), ties to the earlier image); the others keep "
        "the plain logits (hiverge's cifar10-speedrun: 0.25); 1 = every image. The batches of eval_batch_size "
        "make the groups, so another batch size chooses other images; exports give every image the views",
    )
    calibrate: bool = _knob(
        True,
        "after training, fit a temperature on the validation split (minimising its log-loss) that divides "
        "the logits, so that a probability of 0.9 is right about 9 times in 10; predictions unchanged. "
        "predict, interpret, export and the label-issue search use it; --no-calibrate keeps raw probabilities",
    )
    # --- execution ---
    eval_batch_size: int = _knob(1000, "images per step when evaluating")
    precision: Literal["auto", "bf16", "fp32"] = _knob(
        "auto", "auto = bf16 autocast where the hardware has bf16 units (CUDA, AVX-512-BF16/AMX CPUs), else fp32"
    )
    device: str = _knob(
        "auto",
        "auto, cpu, cuda or cuda:N (cpu:N is the CPU, named N: sweep workers' labels); "
        "under torchrun each process takes cuda:LOCAL_RANK",
    )
    sync_bn: bool = _knob(
        False,
        "under torchrun (several processes): BatchNorm statistics over the whole global batch "
        "(SyncBatchNorm) instead of each process's share; no effect in one process",
    )
    threads: int = _knob(0, "CPU threads for PyTorch (0 = all cores)")
    compile: bool = _knob(
        False,
        "torch.compile the model for training: slower first steps (compiling), then "
        "faster ones where the kernels fuse, mostly on a GPU",
    )
    checkpoint_every: int = _knob(1, "write a resumable checkpoint every this many epochs (0 = only on Ctrl-C/SIGTERM)")
    seed: int = _knob(0, "random seed for initialisation, shuffling, augmentation and dropout")
    adapt: bool = _knob(
        True,
        "on a small training set, lower batch_size (and lr with it) and raise epochs to a "
        "minimum of optimizer steps; on an imbalanced one, draw the classes equally often (sampler balanced); "
        "printed and saved; flags given explicitly are kept",
    )
    memory_gb: float = _knob(
        0.0, "most space the decoded images may take in the decode cache, GB (0 = 90 percent of its disk's free space)"
    )
    device_memory_gb: float = _knob(
        0.0,
        "most GPU memory the training images may take before batches stream "
        "from the host cache instead, GB (0 = half the free GPU memory)",
    )
    progress: bool = _knob(
        True,
        "report as it goes: progress bars (on a terminal or in Jupyter), the images found, each epoch's "
        "figures, the calibration and peak memory (--no-progress: only the results, warnings and errors, "
        "as Keras's verbose=0)",
    )
    log: Literal["auto", "none", "tensorboard", "mlflow", "tensorboard,mlflow"] = _knob(
        "auto",
        "watch the run live: TensorBoard event files in the run directory and/or an MLflow run; "
        "auto = tensorboard when the tensorboard package is installed",
    )
    mlflow_uri: str = _knob(
        "",
        "MLflow tracking URI for --log mlflow (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db here); credentials only via MLflow's environment variables",
    )

    def replace(self, **changes: Any) -> Config:
        return parse_config({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def data_path(self) -> str:
        path = self.data or os.environ.get("CNNLAB_DATA", "")
        if not path:
            raise ConfigError("no dataset given: pass --data PATH or set CNNLAB_DATA")
        return path

    def resolved(self) -> Config:
        """This config with its paths absolute, as saved with a run: `data` (taken from CNNLAB_DATA when
        empty), `init_from` and a `pretrained` file. Resume, evaluate and report then read the same files
        from any folder, whatever the variable says later."""
        paths = {}
        if self.data or os.environ.get("CNNLAB_DATA"):
            paths["data"] = os.path.abspath(self.data_path())
        if self.init_from:
            paths["init_from"] = os.path.abspath(self.init_from)
        if self.pretrained and self.pretrained != "hub":
            paths["pretrained"] = os.path.abspath(self.pretrained)
        return self.replace(**paths) if paths else self


# Keys that change which images are trained and validated on. The cells of a sweep and the trials of a
# search are ranked against each other on validation, so they must share every one of these.
DATA_KEYS = ("data", "val_fraction", "split", "split_seed", "subset", "skip_bad_images", "folds", "fold", "fold_seed")


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Config)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check (and, from strings, convert) one value against its annotated type."""
    if kind is Size:
        return _size(key, value)
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key {key!r}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def parse_config(values: dict[str, Any]) -> Config:
    """Build a Config from a plain dict (e.g. a saved config.json), rejecting unknown keys and bad values."""
    types = _field_types()
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; see `cnnlab train --help` for the keys")
    cfg = Config(**{k: _coerce(k, v, types[k]) for k, v in values.items()})
    validate(cfg)
    return cfg


# keys that validate() holds above 0, and at 0 or above
POSITIVE = ("epochs", "batch_size", "eval_batch_size")
NON_NEGATIVE = (
    "checkpoint_every",
    "subset",
    "memory_gb",
    "device_memory_gb",
    "translate",
    "cutout",
    "threads",
    "weight_decay",
    "warmup_epochs",
    "label_smoothing",
    "seed",
    "split_seed",
    "backbone_lr_scale",
    "whiten_bias_epochs",
    "tta_translate",
    "brightness",
    "early_size",
    "early_epochs",
)


def validate(cfg: Config) -> None:
    """Range checks that the types alone do not express."""
    for f in dataclasses.fields(cfg):  # nan and inf pass every comparison below, or wreck a run later
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key {f.name!r} must be a finite number, got {value}")
    for key in POSITIVE:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"config key {key!r} must be positive, got {getattr(cfg, key)}")
    for key in NON_NEGATIVE:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(cfg, key)}")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise ConfigError(f"config key 'val_fraction' must be in [0, 1), got {cfg.val_fraction}")
    if cfg.folds == 1 or cfg.folds < 0 or cfg.fold_seed < 0 or not 0 <= cfg.fold < max(1, cfg.folds):
        raise ConfigError(
            f"config keys 'folds' {cfg.folds}, 'fold' {cfg.fold}, 'fold_seed' {cfg.fold_seed}: folds "
            "must be 0 (off) or at least 2, fold in 0 .. folds-1, fold_seed >= 0"
        )
    if not cfg.lr > 0:
        raise ConfigError(f"config key 'lr' must be positive, got {cfg.lr}")
    if not cfg.muon_lr > 0:
        raise ConfigError(f"config key 'muon_lr' must be positive, got {cfg.muon_lr}")
    if not 0.0 <= cfg.muon_momentum < 1.0:
        raise ConfigError(f"config key 'muon_momentum' must be in [0, 1), got {cfg.muon_momentum}")
    if not 0.0 <= cfg.rrc_scale_min < 1.0:
        raise ConfigError(f"config key 'rrc_scale_min' must be in [0, 1) (0 = off), got {cfg.rrc_scale_min}")
    if not 0.0 <= cfg.contrast < 1.0:
        raise ConfigError(f"config key 'contrast' must be in [0, 1) (0 = off), got {cfg.contrast}")
    if cfg.early_epochs > cfg.epochs:
        raise ConfigError(
            f"config key 'early_epochs' ({cfg.early_epochs:g}) is more than the {cfg.epochs} epochs; lower it"
        )
    if size_hw(cfg.input_size):  # else the input size is known once the images are (pipeline.prepare)
        check_early_size(cfg.early_size, size_hw(cfg.input_size))
    if not 0.0 < cfg.tta_share <= 1.0:
        raise ConfigError(f"config key 'tta_share' must be in (0, 1] (1 = every image), got {cfg.tta_share}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"config key 'label_smoothing' must be in [0, 1), got {cfg.label_smoothing}")
    if not (cfg.device == "auto" or re.fullmatch(r"(cpu|cuda)(:\d+)?", cfg.device)):
        raise ConfigError(f"config key 'device' must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    try:
        password = urllib.parse.urlsplit(cfg.mlflow_uri).password
    except ValueError:  # not a URL: MLflow says so (one warning line) when the run starts
        password = None
    if password:
        raise ConfigError(
            "config key 'mlflow_uri' holds a password, which cnnlab would save with the run; give it "
            "through MLflow's environment instead (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, "
            "or the whole URI in MLFLOW_TRACKING_URI)"
        )


def check_early_size(early_size: int, input_hw: tuple[int, int]) -> None:
    """Refuse an early_size that would not shrink training inputs of `input_hw` (height, width) to a square."""
    if not early_size:
        return
    height, width = input_hw
    if height != width:
        raise ConfigError(
            f"config key 'early_size' needs a square input and it is {height}x{width}; "
            "give a square input_size, or early_size 0 (off)"
        )
    if early_size >= height:
        raise ConfigError(
            f"config key 'early_size' ({early_size}) must be smaller than the input size {height}; lower it, or 0 (off)"
        )


def config_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Config)}


def load_config_file(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            values = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON config ({exc})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config must be a JSON object of key: value")
    if isinstance(values.get("config"), dict) and "environment" in values:
        return saved_config(values["config"])  # a run's config.json: train again as it was made
    return parse_config(values)


def saved_config(values: dict) -> Config:
    """A run's saved config; runs saved before a key existed get the behaviour they had (images squashed,
    no EXIF handling, the keras split; a random split drawn with the training seed)."""
    older = {"resize": "squash", "exif": False, "split": "keras"}
    if "split_seed" not in values:
        older["split_seed"] = values.get("seed", 0)
    return parse_config({**older, **values})
