"""fastnet94's training step with the whitening bias still training (fast94's first 3 epochs) and after it
stopped (epochs 4-8: no gradient for it, so none for the first convolution's input either), interleaved in
one process: forward + backward, fp32, channels_last, synthetic inputs (the compute alone).

    python benchmarks/whiten_bias_grad.py [--batch 2000] [--rounds 3] [--steps 2]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cnnlab.device import set_threads
from cnnlab.models import create_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    args = parser.parse_args()
    set_threads(0)
    torch.manual_seed(0)
    model = create_model("fastnet94").to(memory_format=torch.channels_last)
    inputs = torch.randn(args.batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,))

    def step(bias_trains: bool) -> float:
        model.whiten.bias.requires_grad_(bias_trains)
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        F.cross_entropy(model(inputs), labels).backward()
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {True: [], False: []}
    step(True), step(False)  # warm-up: allocations, kernel choice
    for round_ in range(args.rounds):
        for bias_trains in (True, False):
            seconds = statistics.median(step(bias_trains) for _ in range(args.steps))
            times[bias_trains].append(seconds)
            print(
                f"round {round_} whitening bias {'training' if bias_trains else 'stopped '}: {seconds:.3f} s per "
                f"step of {args.batch}",
                flush=True,
            )
    before, after = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"median s/step: bias training {before:.3f}, stopped {after:.3f}: {before / after:.3f}x "
        f"({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
