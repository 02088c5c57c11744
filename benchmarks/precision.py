"""Do bf16 autocast and channels_last pay on this machine? fp32 vs bf16 for one conv layer and one
fastnet training step, then channels_last vs NCHW for the fastnet training step (fp32).

    python benchmarks/precision.py
Prints times and the bf16/fp32 ratio measured in the same run, and what precision=auto picks.
"""

import time

import torch
import torch.nn.functional as F

from cnnlab.device import cpu_has_bf16
from cnnlab.models import create_model


def timed(fn, repeats=5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 128, 3, padding=1).to(memory_format=torch.channels_last)
    model = create_model("fastnet").to(memory_format=torch.channels_last)
    inputs = torch.randn(256, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (256,))

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(inputs).float(), labels)
        loss.backward()

    for name, fn in (("conv 64->128 3x3, 256x32x32", lambda bf16: conv(x)), ("fastnet train step, batch 256", step)):
        times = {}
        for bf16 in (False, True):

            def run(bf16=bf16, fn=fn):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    fn(bf16)

            times[bf16] = timed(run)
        print(
            f"{name}: fp32 {times[False] * 1e3:.1f} ms, bf16 {times[True] * 1e3:.1f} ms, "
            f"bf16/fp32 time ratio {times[True] / times[False]:.2f}"
        )
    nchw = create_model("fastnet")
    flat_inputs = inputs.contiguous()

    def nchw_step():
        F.cross_entropy(nchw(flat_inputs), labels).backward()

    layout = {"channels_last": timed(lambda: step(False)), "NCHW": timed(nchw_step)}
    print(
        f"fastnet train step, fp32: channels_last {layout['channels_last'] * 1e3:.1f} ms, NCHW "
        f"{layout['NCHW'] * 1e3:.1f} ms, channels_last speed-up {layout['NCHW'] / layout['channels_last']:.2f}x"
    )
    print(f"native bf16 on this CPU: {cpu_has_bf16()} -> precision=auto uses {'bf16' if cpu_has_bf16() else 'fp32'}")


if __name__ == "__main__":
    main()
