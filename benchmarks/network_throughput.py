"""Training images/s of each registered 32x32 network (forward + backward + SGD step, fp32,
channels_last, batch 512, synthetic inputs: the compute alone), and the compute that implies.

    python benchmarks/network_throughput.py
"""

import time

import torch
import torch.nn.functional as F

from cnnlab.device import set_threads
from cnnlab.models import count_params, create_model, default_input_size, list_models


def main() -> None:
    set_threads(0)
    torch.manual_seed(0)
    for name in list_models():
        if default_input_size(name) != 32:
            continue
        model = create_model(name).to(memory_format=torch.channels_last)
        inputs = torch.randn(512, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (512,))
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

        def step(model=model, inputs=inputs, labels=labels, optimizer=optimizer):
            loss = F.cross_entropy(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step()
        start = time.perf_counter()
        for _ in range(4):
            step()
        rate = 4 * 512 / (time.perf_counter() - start)
        print(
            f"{name}: {rate:,.0f} training images/s ({count_params(model)['total']:,} params); "
            f"one epoch of 50,000 images {50_000 / rate:.0f} s"
        )


if __name__ == "__main__":
    main()
