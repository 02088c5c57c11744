"""The presets: named overrides of Config's defaults, each a recipe and where it comes from.

`fast` is the defaults themselves; `seed` reproduces the Keras study in ../shared/docs/SEED_STUDY.md.
"""

from __future__ import annotations

from typing import Any

from .config import Config, parse_config
from .errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # The defaults: a small whitened ConvNet, Nesterov SGD, one-cycle schedule, label smoothing,
    # alternating flip + translate, flip + 1-pixel-translation TTA (after Page 2018 "How to train your
    # ResNet" and Jordan 2024, airbench).
    "fast": {},
    # The study, as Keras ran it: ImageDataGenerator(rescale=1/255, validation_split=0.1),
    # flow_from_directory(target_size=(256, 256)) -> nearest upscale, AlexNet + BN + Dropout,
    # Adam(1e-3, eps 1e-7) at a constant rate, batch 50, 20 epochs, no augmentation.
    "seed": {
        "model": "seed_alexnet",
        "input_size": 256,
        "interpolation": "nearest",
        "scaling": "rescale",
        "split": "keras",
        "val_fraction": 0.1,
        "flip": False,
        "translate": 0,
        "cutout": 0,
        "epochs": 20,
        "batch_size": 50,
        "optimizer": "adam",
        "lr": 1e-3,
        "momentum": 0.9,
        "adam_eps": 1e-7,
        "weight_decay": 0.0,
        "schedule": "constant",
        "warmup_epochs": 0.0,
        "label_smoothing": 0.0,
        "tta": False,
        "tta_translate": 0,
        "flip_alternate": False,
        "eval_batch_size": 100,
        # The study ran in fp32; bf16 (--precision bf16) is an explicit, measured choice, never automatic.
        "precision": "fp32",
        # flow_from_directory(target_size=(256, 256)): any image squashed to 256x256, nearest, no EXIF
        # handling; the recipe is the study's whatever the dataset's size (no adaptation).
        "resize": "squash",
        "exif": False,
        "adapt": False,
    },
    # Fine-tuning a pretrained backbone (--pretrained, --init-from), after timm's and fastai's recipes:
    # AdamW, a short linear warm-up then cosine decay, the head at lr and the pretrained layers at a
    # tenth of it (they are already good; a high rate would undo them), label smoothing 0.1, weight
    # decay 0.05, random-resized-crop + flip in place of translation.
    "finetune": {
        "scaling": "model",
        "optimizer": "adamw",
        "lr": 1e-3,
        "momentum": 0.9,
        "adam_eps": 1e-8,
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 1.0,
        "backbone_lr_scale": 0.1,
        "label_smoothing": 0.1,
        "epochs": 10,
        "batch_size": 64,
        "flip": True,
        "flip_alternate": False,
        "translate": 0,
        "cutout": 0,
        "rrc_scale_min": 0.25,
        "tta_translate": 0,
    },
    # 94% on CIFAR-10: airbench94_muon's recipe (Jordan 2024; github.com/KellerJordan/cifar10-airbench) on
    # all 50,000 training images (no validation split, as the record trains): its network (fastnet94),
    # whitening init, Muon for the conv filters and Nesterov SGD for the rest, a linear decay to 0 with
    # no warm-up, the whitening bias trained for 3 epochs, label smoothing 0.2, alternating flip + 2-pixel
    # translate, batch 2000, 8 epochs, flip + 1-pixel-translation TTA; and one lever of its successor (below).
    # airbench's SGD rates are for the loss summed over the batch; cnnlab's loss is the batch mean, so they
    # are 2000x theirs: 0.67 -> 1340 (head), 0.053 -> 106 (biases, a fraction 0.053/0.67 of lr); lr x decay
    # = 2e-6 x 2000 in every group.
    "fast94": {
        "model": "fastnet94",
        "val_fraction": 0.0,
        "flip": True,
        "flip_alternate": True,
        "translate": 2,
        "cutout": 0,
        "epochs": 8,
        "batch_size": 2000,
        "optimizer": "muon",
        "lr": 0.67 * 2000,
        "backbone_lr_scale": 0.053 / 0.67,
        "momentum": 0.85,
        "nesterov": True,
        "weight_decay": 2e-6 * 2000,
        "muon_lr": 0.24,
        "muon_momentum": 0.6,
        "schedule": "onecycle",
        "warmup_epochs": 0.0,
        "whiten_bias_epochs": 3.0,
        "tta": True,
        "tta_translate": 1,
        "eval_batch_size": 2000,
        # hiverge/cifar10-speedrun's per-image brightness and contrast jitter (its 0.1399 / 0.1308, rounded),
        # which its authors found raises accuracy at the same number of steps, and the lighter label smoothing
        # they tuned with it (airbench's is 0.2); together they raise fast94's accuracy (see docs/benchmarks.md)
        "brightness": 0.14,
        "contrast": 0.13,
        "label_smoothing": 0.09,
    },
}


def preset(name: str, **overrides: Any) -> Config:
    """The named preset with `overrides` applied, validated."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return parse_config({**PRESETS[name], **overrides})
