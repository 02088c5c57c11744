"""What fast94's brightness/contrast jitter adds to a training batch: the device loader making batches of
CIFAR-10-sized images with fast94's augmentation with and without the jitter, interleaved in one process,
next to one fastnet94 training step (forward + backward, fp32, channels_last) for scale. Synthetic images.

    python benchmarks/jitter_cost.py [--batch 2000] [--rounds 5]
"""

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.config import preset
from cnnlab.data import DeviceLoader
from cnnlab.device import set_threads
from cnnlab.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    set_threads(0)
    cfg = preset("fast94")
    images = np.random.default_rng(0).integers(0, 256, (args.batch * 5, 32, 32, 3), dtype=np.uint8)
    labels = np.zeros(len(images), dtype=np.int64)
    cpu = torch.device("cpu")

    def loader(jitter: bool) -> DeviceLoader:
        return DeviceLoader(
            images,
            labels,
            args.batch,
            cpu,
            shuffle=True,
            drop_last=True,
            flip=cfg.flip,
            flip_alternate=cfg.flip_alternate,
            translate=cfg.translate,
            mean=[0.5] * 3,
            std=[0.25] * 3,
            brightness=cfg.brightness if jitter else 0.0,
            contrast=cfg.contrast if jitter else 0.0,
        )

    def epoch_seconds_per_batch(jitter: bool) -> float:
        data = loader(jitter)
        start = time.perf_counter()
        count = sum(1 for _ in data)
        return (time.perf_counter() - start) / count

    model = create_model("fastnet94").to(memory_format=torch.channels_last)
    inputs = next(iter(loader(True)))[0]
    targets = torch.randint(0, 10, (args.batch,))

    def train_step() -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        F.cross_entropy(model(inputs), targets).backward()
        return time.perf_counter() - start

    train_step(), epoch_seconds_per_batch(False), epoch_seconds_per_batch(True)  # warm-up
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(args.rounds):
        for jitter in (False, True):
            times[jitter].append(epoch_seconds_per_batch(jitter))
            print(
                f"round {round_} {'with' if jitter else 'without'} jitter: {times[jitter][-1] * 1e3:.1f} ms per "
                f"batch of {args.batch}",
                flush=True,
            )
    step = statistics.median(train_step() for _ in range(2))
    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"median ms/batch: without {without * 1e3:.1f}, with {with_ * 1e3:.1f} (+{(with_ - without) * 1e3:.1f} ms); "
        f"a fastnet94 training step {step:.2f} s: the jitter adds {(with_ - without) / step * 100:.2f}% "
        f"({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
