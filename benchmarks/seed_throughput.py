"""Training and inference images/s of the `seed` preset (the study's AlexNet on 256x256 inputs),
loader included, over a fixed number of steps; then the time of one full epoch it implies.

    python benchmarks/seed_throughput.py [--steps 8] [--batch-sizes 50,100]

Uses the real pipeline: uint8 32x32 images on the device, nearest upscale to 256 per batch, the
training step of cnnlab.train. Prints the peak resident memory of the process at the end.
"""
import argparse
import os
import resource
import time

import numpy as np

from cnnlab import preset
from cnnlab.data import DeviceLoader, load_dataset
from cnnlab.device import resolve_device, set_threads, use_bf16
from cnnlab.evaluate import evaluate
from cnnlab.pipeline import build_model
from cnnlab.train import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.environ.get("CNNLAB_DATA", "../shared/datasets/cifar10"))
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per batch size")
    parser.add_argument("--batch-sizes", default="50,100")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    set_threads(0)
    ds = load_dataset(args.data, progress=False)
    device = resolve_device("auto")
    for batch_size in map(int, args.batch_sizes.split(",")):
        cfg = preset("seed", data=args.data, batch_size=batch_size, epochs=1, progress=False,
                     precision=args.precision)
        bf16 = use_bf16(cfg.precision, device)
        model = build_model(cfg, 10, 256, device)
        n = batch_size * (args.steps + 1)  # one warm-up step, then the timed ones
        loader = DeviceLoader(ds.train.images[:n], ds.train.labels[:n], batch_size, device, input_size=256,
                              shuffle=True, drop_last=True, seed=0)
        warm = DeviceLoader(ds.train.images[:batch_size], ds.train.labels[:batch_size], batch_size, device,
                            input_size=256, shuffle=True, drop_last=True)
        train(model, warm, None, cfg, ds.classes, bf16)
        start = time.perf_counter()
        train(model, loader, None, cfg, ds.classes, bf16)
        train_rate = n / (time.perf_counter() - start)
        evals = DeviceLoader(ds.val.images[:500], ds.val.labels[:500], 100, device, input_size=256)
        start = time.perf_counter()
        evaluate(model, evals, ds.classes, bf16)
        eval_rate = 500 / (time.perf_counter() - start)
        epoch_s = len(ds.train) / train_rate + len(ds.val) / eval_rate
        print(f"seed preset, batch {batch_size}, {'bf16' if bf16 else 'fp32'}: training {train_rate:.1f} images/s "
              f"({n} images), inference {eval_rate:.1f} images/s; one epoch (45,000 train + 5,000 val) "
              f"~{epoch_s / 60:.1f} min; vs the study's Keras pipeline on this kind of machine "
              f"(12.2 images/s, PEERS.md): {train_rate / 12.2:.1f}x")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:,.0f} MB; cores: {os.cpu_count()}; numpy {np.__version__}")


if __name__ == "__main__":
    main()
