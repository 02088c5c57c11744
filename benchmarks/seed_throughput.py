"""Training images/s of the `seed` preset (the study's AlexNet on 256x256 inputs) at the batch sizes of
the study's grid (100, 200, 250: sweep.NAMED_GRIDS["seed-grid"]), loader included, side by side with the
study's own Keras pipeline when given its Python.

    python benchmarks/seed_throughput.py [--steps 16] [--rounds 2] [--batch-sizes 100,200,250]
        [--keras-python keras-venv/bin/python]

Each round runs, one after the other on the same cores: the Keras peer (../shared/peers/keras_seed_study.py,
in its own environment; only with --keras-python); cnnlab fp32 as the seed preset runs it (the first layer
computed from the 32x32 images, models/upscale.py; on an AVX2-only CPU, NNPACK's forward convolutions,
models/cpu_conv.py); unless --no-compare: the same without NNPACK (on AVX2-only CPUs; not on CUDA) and
without either, the 256x256 batch built and convolved (oneDNN, cuDNN) as the code did before both; and cnnlab bf16 where the
hardware has native bf16 (a GPU, or a CPU with AVX-512-BF16/AMX; elsewhere bf16 is emulated, several times
slower, and not measured). Each cnnlab contender is measured at every batch size. On CUDA, cuDNN times its
convolution algorithms first (cudnn.benchmark), as `cnnlab train` has it.
cnnlab's figures are the training step of cnnlab.train (cnnlab/training.py) over the real loader: one warm-up step, then
--steps timed steps. The Keras peer trains at its own batch 50 (the study's first run); with
--keras-python, cnnlab is measured at batch 50 too, and the last line is the ratio of the medians over
the rounds at that batch size. Also prints one epoch's time at each batch size and the time of the
study's 3x3 grid (batch 100/200/250 x epochs 20/25/30, epochs shared: one 30-epoch training per batch
size gives its three cells) at the measured rates, and the peak resident memory.
"""

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from cnnlab import preset
from cnnlab.data import load_dataset
from cnnlab.device import cpu_has_bf16, resolve_device, set_threads, use_bf16
from cnnlab.models import cpu_conv
from cnnlab.pipeline import build_model, make_loader, preprocessing, upscale_in_model
from cnnlab.sweep import NAMED_GRIDS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

from cnnlab.training import train

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers", "keras_seed_study.py")


def cnnlab_rate(ds, data: str, batch_size: int, steps: int, variant: str, device) -> float:
    """Training images/s of the seed preset over `steps` steps after one warm-up step."""
    precision, direct = variant.split()[0], "before" not in variant
    nnpack = direct and "NNPACK" not in variant
    avx2 = cpu_conv._avx2_cpu
    cpu_conv._avx2_cpu = avx2 if nnpack else (lambda: False)
    try:
        return _rate(ds, data, batch_size, steps, precision, direct, device)
    finally:
        cpu_conv._avx2_cpu = avx2


def _rate(ds, data: str, batch_size: int, steps: int, precision: str, direct: bool, device) -> float:
    cfg = preset("seed", data=data, batch_size=batch_size, epochs=1, progress=False, precision=precision)
    prep = preprocessing(cfg, ds)
    model = build_model(cfg, len(ds.classes), (256, 256), device)
    at_stored_size = direct and upscale_in_model(model, cfg, prep)
    bf16 = use_bf16(cfg.precision, device)

    def loader(n: int):
        return make_loader(ds.train.take(np.arange(n)), cfg, prep, device, training=True, at_stored_size=at_stored_size)

    train(model, loader(batch_size), None, cfg, ds.classes, bf16)  # warm-up: first-call allocations
    n = batch_size * steps
    timed = loader(n)
    start = time.perf_counter()
    train(model, timed, None, cfg, ds.classes, bf16)
    return n / (time.perf_counter() - start)


def keras_rate(python: str, data: str, steps: int) -> float:
    result = subprocess.run([python, PEER, data, str(steps)], capture_output=True, text=True)
    found = re.search(r"training ([0-9.]+) images/s", result.stdout)
    if result.returncode or not found:
        sys.exit(f"the Keras peer failed ({python} {PEER}):\n{result.stdout[-800:]}{result.stderr[-1500:]}")
    return float(found.group(1))


def print_projection(median: dict, train_images: int, grid: dict, batches: list[int]) -> None:
    """One epoch's time per batch size at the fp32 rate, the study's grid's time, and the old code's ratio."""
    epochs = max(grid["epochs"])  # one training per batch size passes through every epoch count's state
    grid_s = 0.0
    for batch in batches:
        epoch_s = train_images / median[("fp32", batch)]
        if batch in grid["batch_size"]:
            grid_s += epochs * epoch_s
        print(
            f"cnnlab seed preset fp32, batch {batch}: one epoch of {train_images:,} training images "
            f"~{epoch_s / 60:.0f} min at {median[('fp32', batch)]:.1f} images/s"
        )
    if all(b in batches for b in grid["batch_size"]):
        print(
            f"the study's grid (batch {'/'.join(map(str, grid['batch_size']))} x epochs "
            f"{'/'.join(map(str, grid['epochs']))}, {epochs} shared epochs per batch size) in fp32: "
            f"~{grid_s / 3600:.0f} h (validation passes not included)"
        )
    for batch in batches:
        if ("fp32 before", batch) in median:
            nnpack = (
                f"; NNPACK forward alone {median[('fp32', batch)] / median[('fp32 without NNPACK', batch)]:.2f}x"
                if ("fp32 without NNPACK", batch) in median
                else ""
            )
            print(
                f"batch {batch}: cnnlab fp32 now vs before (256x256 batch built, oneDNN forward): "
                f"{median[('fp32', batch)] / median[('fp32 before', batch)]:.2f}x" + nnpack
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("CNNLAB_DATA", "../shared/datasets/cifar10"))
    parser.add_argument("--steps", type=int, default=16, help="timed training steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the contenders")
    grid = NAMED_GRIDS["seed-grid"]
    parser.add_argument(
        "--batch-sizes",
        default=",".join(map(str, grid["batch_size"])),
        help="comma-separated; default: the study's grid",
    )
    parser.add_argument("--keras-python", help="the Python of the Keras peer's environment (see its header)")
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="measure cnnlab only as it runs, not also without NNPACK and as before both changes",
    )
    args = parser.parse_args()
    set_threads(0)
    device = resolve_device("auto")
    if device.type == "cuda":  # as `cnnlab train` runs (device.tune_for_training): cuDNN picks its algorithms
        torch.backends.cudnn.benchmark = True
    ds = load_dataset(args.data, val_fraction=0.1, split="keras", progress=False, exif=False, resize="squash")
    bf16_native = device.type == "cuda" or cpu_has_bf16()
    nnpack_here = device.type == "cpu" and cpu_conv._avx2_cpu()  # NNPACK is a CPU path: no such contender on CUDA
    compare = (["fp32 without NNPACK"] if nnpack_here else []) + ["fp32 before"]
    contenders = (
        (["keras"] if args.keras_python else [])
        + ["fp32"]
        + (compare if args.compare else [])
        + (["bf16"] if bf16_native else [])
    )
    batches = [int(b) for b in args.batch_sizes.split(",")]
    batches = ([50] if args.keras_python and 50 not in batches else []) + batches
    rates: dict[tuple[str, int], list[float]] = {}
    for round_ in range(1, args.rounds + 1):
        for name in contenders:
            for batch in [50] if name == "keras" else batches:
                if name == "keras":
                    rate = keras_rate(args.keras_python, args.data, args.steps)
                else:
                    rate = cnnlab_rate(ds, args.data, batch, args.steps, name, device)
                rates.setdefault((name, batch), []).append(rate)
                label = "keras (study pipeline)" if name == "keras" else "cnnlab seed preset " + name
                print(
                    f"round {round_}: {label}: training {rate:.1f} images/s ({args.steps} steps of batch {batch})",
                    flush=True,
                )
    median = {key: statistics.median(values) for key, values in rates.items()}
    print_projection(median, len(ds.train), grid, batches)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(
        f"peak resident memory of this process: {peak_mb:,.0f} MB; {os.cpu_count()} cores: {cpu}; "
        f"native bf16: {'yes' if bf16_native else 'no (bf16 not measured: emulated, several times slower than fp32)'}"
    )
    if args.keras_python:
        keras = median[("keras", 50)]
        bf16 = f"{median[('bf16', 50)] / keras:.2f}" if ("bf16", 50) in median else "not measured (no native bf16 here)"
        print(
            f"ratio cnnlab/keras seed preset training images/s at batch 50: fp32 {median[('fp32', 50)] / keras:.2f}, "
            f"bf16 {bf16} (keras {keras:.1f} images/s, same run)"
        )

    write_record(
        "seed_throughput",
        "training images/s of the seed preset at the study's batch sizes (median over rounds; loader included)",
        {
            "images_per_s": {f"{name} batch {batch}": value for (name, batch), value in median.items()},
            "steps": args.steps,
            "rounds": args.rounds,
            "peak_rss_mb": round(peak_mb),
        },
    )


if __name__ == "__main__":
    main()
