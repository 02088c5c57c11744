"""Seconds per training step and the FLOP/s they achieve, for the fast and fast94 presets, on the machine at
hand, with where the time goes; writes benchmarks/records/step_speed.json.

    python benchmarks/step_speed.py DATA [--presets fast,fast94] [--variants eager,compiled] [--steps 6]
        [--warm 2] [--rounds 2] [--precision auto] [--no-profile]

Each contender is the real training step of `cnnlab train` (cnnlab/training.py: the loader's batch with its
augmentation, forward, loss, backward, optimizer and schedule) at the preset's batch size, built as `cnnlab
train` builds it (cnnlab.pipeline.prepare) on a stratified subset of DATA's training images just large
enough for the steps. `--warm` steps run first (a compiled step compiles there; its time is reported
apart), then `--steps` timed ones. The FLOPs of one step are counted by torch's FlopCounterMode (forward and
backward of the convolutions and matmuls; elementwise work counts as none), so FLOP/s = FLOPs x steps / time.
Rounds interleave the contenders (A, B, A, B) so that drifting load hits all alike; the median over rounds
is the figure. A large fp32 matrix product is timed last, the roof the convolutions' FLOP/s are read against.
Unless --no-profile, one more profiled step of each contender gives the share of step time by
kind of work (convolution, batch norm, activation, pooling, matmul, the optimizer's elementwise work,
the rest).
Variants: `eager` (cnnlab's default) and `compiled` (--compile: torch.compile of the training forward and
backward, inductor).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

from cnnlab import preset  # noqa: E402
from cnnlab.pipeline import prepare  # noqa: E402
from cnnlab.training import Meter, TrainControl, Training  # noqa: E402

# kinds of work, by the aten op names that do them (the first kind whose words an op name holds)
KINDS = {
    "convolution": ("convolution", "conv"),
    "batch norm": ("batch_norm",),
    "activation": ("gelu", "relu", "silu"),
    "pooling": ("pool",),
    "matmul (Muon's Newton-Schulz, the head)": ("mm", "linalg"),
    "optimizer (elementwise)": ("lerp", "foreach", "_fused"),
}


@dataclass
class Contender:
    preset: str
    variant: str
    training: Training
    batches: object  # an endless iterator over the loader's batches
    step: int = 0
    flops: int = 0
    warm_s: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.preset} {self.variant}"

    def run(self, steps: int) -> float:
        """Seconds per step over `steps` steps (the last one's work done: losses read back)."""
        meter = Meter.start(self.training.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step += 1
            inputs, labels = next(self.batches)
            self.training.train_step(self.step, inputs, labels, meter)
        meter.read(1)  # waits for the device
        return (time.perf_counter() - start) / steps


def endless(loader):
    epoch = 0
    while True:
        epoch += 1
        loader.set_epoch(epoch)
        yield from loader.batches(0)


def build(data: str, name: str, variant: str, steps: int, precision: str) -> Contender:
    batch = preset(name).batch_size
    images = batch * (steps + 1) * 11 // 10 + 100  # the steps' batches, whatever share validation takes
    cfg = preset(
        name, data=data, subset=images, compile=variant == "compiled", precision=precision, progress=False, log="none"
    )
    ready = prepare(cfg)
    training = Training.build(
        ready.model, ready.train_loader, None, ready.cfg, ready.dataset.classes, ready.bf16, TrainControl()
    )
    training.model.train()
    return Contender(name, variant, training, endless(ready.train_loader))


def count_flops(contender: Contender) -> int:
    """The FLOPs of one step, counted on the model as it is (a compiled step does the same work: counting
    through the compiled module would trace it again under the counter's hooks)."""
    net, contender.training.net = contender.training.net, contender.training.model
    try:
        with FlopCounterMode(display=False) as counter:
            contender.run(1)
    finally:
        contender.training.net = net
    return counter.get_total_flops()


def shares(contender: Contender) -> dict[str, float]:
    """The share of one profiled step's wall time by kind of work: the self time of the aten ops of each
    kind; "the rest" is everything else (other ops, a compiled step's fused kernels, Python)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        contender.run(1)
        whole = (time.perf_counter() - start) * 1e6  # microseconds, as the profiler's times
    totals = dict.fromkeys(KINDS, 0.0)
    for event in prof.key_averages():
        kind = next((k for k, words in KINDS.items() if any(w in event.key for w in words)), None)
        if event.key.startswith("aten::") and kind:
            totals[kind] += event.self_cpu_time_total
    totals["the rest"] = max(whole - sum(totals.values()), 0.0)
    return {kind: round(value / whole, 3) for kind, value in totals.items()}


def matmul_gflop_per_s(size: int = 2048, repeats: int = 5) -> float:
    """What this machine's BLAS reaches on a large fp32 matrix product (a roof for the convolutions)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def table(results: dict, roof: float) -> dict:
    """One row a contender: its speed, its FLOP/s against the matmul roof, and where its step's time goes."""
    columns = ["preset", "variant", "precision", "batch", "s/step", "images/s", "GFLOP/step", "GFLOP/s"]
    columns += ["% of matmul's", "convolution %", "BN, activation, pooling %", "the rest %"]
    rows = []
    for r in results.values():
        shares = r.get("time_shares") or {}
        layers = sum(shares.get(k, 0.0) for k in ("batch norm", "activation", "pooling"))
        rest = 1.0 - shares.get("convolution", 0.0) - layers
        rows.append(
            [r["preset"], r["variant"], r["precision"], r["batch_size"], r["s_per_step"], r["images_per_s"]]
            + [r["gflop_per_step"], r["gflop_per_s"], round(100 * r["gflop_per_s"] / roof)]
            + ([round(100 * shares["convolution"]), round(100 * layers), round(100 * rest)] if shares else ["-"] * 3)
        )
    return {"columns": columns, "rows": rows}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--presets", default="fast,fast94")
    parser.add_argument("--variants", default="eager,compiled")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warm", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--no-profile", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    contenders = []
    for name in args.presets.split(","):
        for variant in args.variants.split(","):
            contender = build(args.data, name, variant, args.warm + args.steps * args.rounds + 3, args.precision)
            start = time.perf_counter()
            contender.run(args.warm)
            contender.warm_s = time.perf_counter() - start
            contender.flops = count_flops(contender)
            contenders.append(contender)
            print(f"{contender.name}: built, {args.warm} warm steps in {contender.warm_s:.1f} s", flush=True)
    times = {c.name: [] for c in contenders}
    for round_ in range(args.rounds):
        for contender in contenders:
            times[contender.name].append(contender.run(args.steps))
            print(f"round {round_ + 1} {contender.name}: {times[contender.name][-1]:.3f} s/step", flush=True)
    results = {}
    for c in contenders:
        seconds = statistics.median(times[c.name])
        batch = c.training.cfg.batch_size
        results[c.name] = {
            "preset": c.preset,
            "variant": c.variant,
            "batch_size": batch,
            "precision": "bf16" if c.training.bf16 else "fp32",
            "threads": torch.get_num_threads(),
            "s_per_step": round(seconds, 4),
            "s_per_step_rounds": [round(t, 4) for t in times[c.name]],
            "images_per_s": round(batch / seconds, 1),
            "gflop_per_step": round(c.flops / 1e9, 2),
            "gflop_per_s": round(c.flops / seconds / 1e9, 1),
            "warm_s": round(c.warm_s, 1),
        }
        if not args.no_profile:
            results[c.name]["time_shares"] = shares(c)
        print(
            f"{c.name}: {seconds:.3f} s/step ({batch / seconds:.0f} images/s), {c.flops / 1e9:.0f} GFLOP/step, "
            f"{c.flops / seconds / 1e9:.1f} GFLOP/s; shares {results[c.name].get('time_shares', '-')}"
        )
    roof = matmul_gflop_per_s()
    print(f"fp32 matmul 2048x2048 on this machine: {roof:.1f} GFLOP/s")
    tables = {"training step by preset": table(results, roof)}
    record = {"contenders": results, "matmul_gflop_per_s": round(roof, 1), "tables": tables}
    write_record("step_speed", "seconds per training step and FLOP/s by preset", record)


if __name__ == "__main__":
    main()
