"""Time to write one checkpoint (weights, optimizer, RNG, history; atomic write with fsync) for each
preset's model, against the time of one of its training epochs on CIFAR-10 (45,000 images).

    python benchmarks/checkpoint_overhead.py
"""

import os
import tempfile
import time

import torch
import torch.nn.functional as F

from cnnlab import preset
from cnnlab.models import create_model
from cnnlab.optim import build_optimizer
from cnnlab.runs import save_checkpoint

EPOCH_S = {"fast": 60.0, "seed": 67 * 60.0}  # measured epoch times on this machine (README)


def main() -> None:
    for name in ("fast", "seed"):
        cfg = preset(name)
        model = create_model(cfg.model)
        optimizer = build_optimizer(model, cfg)
        size = 256 if name == "seed" else 32
        loss = F.cross_entropy(model(torch.randn(4, 3, size, size)), torch.arange(4))
        loss.backward()
        optimizer.step()
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": 2,
            "step": 0,
            "sums": {},
            "history": [{"epoch": 1, "loss": 1.0}] * 30,
            "scheduler": {},
        }
        with tempfile.TemporaryDirectory() as tmp:
            times = []
            for _ in range(5):
                start = time.perf_counter()
                save_checkpoint(tmp, state)
                times.append(time.perf_counter() - start)
            size_mb = os.path.getsize(os.path.join(tmp, "checkpoint.pt")) / 1e6
        median = sorted(times)[2]
        print(
            f"{name} preset ({cfg.model}): checkpoint {size_mb:.1f} MB written in {median * 1e3:.0f} ms "
            f"(median of 5) = {100 * median / EPOCH_S[name]:.3f}% of one epoch"
        )


if __name__ == "__main__":
    main()
