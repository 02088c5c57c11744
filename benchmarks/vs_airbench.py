"""cnnlab's fast94 preset side by side with airbench94_muon (the peer) on this machine, interleaved.

    python benchmarks/vs_airbench.py [--data DIR] [--method full] [--seeds 3] [--out DIR]
    python benchmarks/vs_airbench.py --method throughput [--rounds 3] [--steps-per-epoch 2] [--peer-malloc-tuned]
        (--cnnlab-acc 0.9412 | --cnnlab-runs RUN_DIR ...) (--peer-acc 0.9401 | --peer-json FILE ...)

The peer is ../shared/peers/airbench94_muon_cpu.py (MIT), run unmodified in its own process; cnnlab runs
`python -m cnnlab train --preset fast94` in its own process too, so that neither inherits the other's
memory or threads. They alternate: peer, cnnlab, peer, cnnlab ...

Times are training times: for the peer its `train_s` less its final TTA evaluation (`tta_s`), i.e. the
whitening init and the training steps; for cnnlab the run's `train_time_s` (the training steps; its
whitening init, well under a second, is done before). The final TTA evaluation is left out of both.

--method full: each seed trains each recipe on all training images; accuracy is each one's test
accuracy with TTA, time its training time; the means over seeds are compared.
--method throughput (full runs are long on a CPU): each round runs each recipe for its whole epoch count
on a subset of steps_per_epoch x 2,000 training images (symlinked, with 10 test images per class); the
seconds per step of each, over its epochs after the first (the first holds one-time set-up), times the
steps of a full epoch (training images // 2,000), times its epochs, is its time. The accuracies come from
full runs: given as numbers, or read from cnnlab run directories (metrics.json) and from files holding the
peer's output (its JSON lines with "tta_acc"). The medians over rounds are compared. cnnlab keeps freed
memory for the next step on a CPU (cnnlab.device.tune_host_allocator); with --peer-malloc-tuned each round
also runs the peer with the same glibc settings (environment variables) and prints that ratio too.

Prints each run's figures, the method, and as its last line:
    ratio cnnlab/airbench94_muon time to 94%: 0.NN (cnnlab NN.NN% in N s, airbench94_muon NN.NN% in N s)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "..", "shared", "peers", "airbench94_muon_cpu.py")
BATCH = 2000  # both recipes' batch size
TARGET = 0.94
# cnnlab.device.tune_host_allocator's mallopt settings, as glibc's environment variables: for a peer run on
# equal terms (--peer-malloc-tuned)
PEER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str((1 << 31) - 1)}


def run(cmd: list[str], env: dict) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stdout[-1500:]}{result.stderr[-2500:]}")
    return result.stdout


def peer_results(output: str) -> list[dict]:
    """The peer's per-run JSON lines (each with tta_acc, train_s, tta_s, per_epoch)."""
    found = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{") and '"tta_acc"' in line:
            found.append(json.loads(line))
    return found


def run_peer(python: str, peer: str, data: str, seed: int, env: dict, keep: str | None = None) -> dict:
    output = run([python, peer, data, "--seed", str(seed)], env)
    if keep:  # for a later --peer-json
        with open(keep, "w") as fh:
            fh.write(output)
    results = peer_results(output)
    if not results:
        sys.exit("the peer printed no result line")
    return results[-1]


def run_cnnlab(python: str, data: str, seed: int, out: str, env: dict, extra: list[str] = ()) -> dict:
    run(
        [
            python,
            "-m",
            "cnnlab",
            "train",
            "--preset",
            "fast94",
            "--data",
            data,
            "--seed",
            str(seed),
            "--out",
            out,
            "--no-progress",
            "--log",
            "none",
            "--checkpoint-every",
            "0",
            *extra,
        ],
        env,
    )
    with open(os.path.join(out, "metrics.json")) as fh:
        metrics = json.load(fh)
    with open(os.path.join(out, "history.json")) as fh:
        history = json.load(fh)
    with open(os.path.join(out, "config.json")) as fh:
        config = json.load(fh)
    return {"metrics": metrics, "history": history, "config": config}


def class_dirs(root: str) -> list[str]:
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def subset_folder(data: str, dest: str, train_per_class: int, test_per_class: int) -> int:
    """A copy of `data` by symlinks: the first files of each class (sorted names). Returns its training size."""
    total = 0
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in class_dirs(os.path.join(data, split)):
            source = os.path.join(data, split, name)
            os.makedirs(os.path.join(dest, split, name))
            for file in sorted(os.listdir(source))[:count]:
                os.symlink(os.path.abspath(os.path.join(source, file)), os.path.join(dest, split, name, file))
                total += split == "train"
    return total


def count_training_images(data: str) -> int:
    train = os.path.join(data, "train")
    return sum(len(os.listdir(os.path.join(train, d))) for d in class_dirs(train))


def ratio_line(cnnlab_acc: float, cnnlab_s: float, peer_acc: float, peer_s: float) -> str:
    return (
        f"ratio cnnlab/airbench94_muon time to 94%: {cnnlab_s / peer_s:.2f} (cnnlab {100 * cnnlab_acc:.2f}% "
        f"in {cnnlab_s:.0f} s, airbench94_muon {100 * peer_acc:.2f}% in {peer_s:.0f} s)"
    )


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f}% +/- {100 * std:.2f}"


def full(args, env: dict, tmp: str) -> tuple[float, float, float, float, str]:
    peer_acc, peer_s, ours_acc, ours_s = [], [], [], []
    out = args.out or tmp
    os.makedirs(out, exist_ok=True)
    for seed in range(args.seeds):
        result = run_peer(args.python, args.peer, args.data, seed, env, os.path.join(out, f"peer-{seed}.txt"))
        peer_acc.append(result["tta_acc"])
        peer_s.append(result["train_s"] - result["tta_s"])
        print(f"seed {seed} airbench94_muon: {100 * peer_acc[-1]:.2f}% in {peer_s[-1]:.0f} s", flush=True)
        ours = run_cnnlab(args.python, args.data, seed, os.path.join(out, f"cnnlab-{seed}"), env)
        ours_acc.append(ours["metrics"]["test"]["accuracy"])
        ours_s.append(ours["metrics"]["train_time_s"])
        print(f"seed {seed} cnnlab fast94: {100 * ours_acc[-1]:.2f}% in {ours_s[-1]:.0f} s", flush=True)
    print(f"airbench94_muon over {args.seeds} seeds: {mean_std(peer_acc)}, {statistics.mean(peer_s):.0f} s")
    print(f"cnnlab fast94 over {args.seeds} seeds: {mean_std(ours_acc)}, {statistics.mean(ours_s):.0f} s")
    method = (
        f"method: full runs, {args.seeds} seed(s) each, interleaved; means over seeds; times exclude the final "
        "TTA evaluation"
    )
    return (
        statistics.mean(ours_acc),
        statistics.mean(ours_s),
        statistics.mean(peer_acc),
        statistics.mean(peer_s),
        method,
    )


def accuracy_from(value: float | None, paths: list[str], read) -> float:
    values = [value] if value is not None else [read(path) for path in paths]
    return statistics.mean(values)


def cnnlab_run_accuracy(path: str) -> float:
    with open(os.path.join(path, "metrics.json")) as fh:
        return json.load(fh)["test"]["accuracy"]


def peer_file_accuracy(path: str) -> float:
    with open(path) as fh:
        results = peer_results(fh.read())
    if not results:
        sys.exit(f'{path}: no peer result line (a JSON line with "tta_acc")')
    return statistics.mean(r["tta_acc"] for r in results)


def seconds_per_step(epoch_times: list[float], steps_per_epoch: int) -> float:
    """Over the epochs after the first (the first holds one-time set-up: loader preparation, allocations)."""
    later = epoch_times[1:] or epoch_times
    return statistics.mean(later) / steps_per_epoch


def throughput(args, env: dict, tmp: str) -> tuple[float, float, float, float, str]:
    ours_acc = accuracy_from(args.cnnlab_acc, args.cnnlab_runs, cnnlab_run_accuracy)
    peer_acc = accuracy_from(args.peer_acc, args.peer_json, peer_file_accuracy)
    n_full = count_training_images(args.data)
    full_steps = n_full // BATCH
    sub = os.path.join(tmp, "subset")
    n_classes = len(class_dirs(os.path.join(args.data, "train")))
    n_sub = subset_folder(args.data, sub, -(-args.steps_per_epoch * BATCH // n_classes), 10)
    steps = n_sub // BATCH
    print(
        f"throughput: {n_sub} training images ({steps} steps of {BATCH} per epoch) per run; a full epoch is "
        f"{full_steps} steps ({n_full} images)",
        flush=True,
    )
    peer_epoch, ours_epoch, peer_epochs, ours_epochs, tuned_epoch = [], [], 8, None, []
    for round_ in range(args.rounds):
        peers = [("", env, peer_epoch)]
        if args.peer_malloc_tuned:
            peers.append((" (malloc tuned)", {**env, **PEER_MALLOC}, tuned_epoch))
        for label, peer_env, figures in peers:
            result = run_peer(args.python, args.peer, sub, round_, peer_env)
            cumulative = [e["train_s"] for e in result["per_epoch"]]
            times = [b - a for a, b in zip([0.0] + cumulative, cumulative)]
            peer_epochs = len(times)
            figures.append(seconds_per_step(times, steps) * full_steps)
            print(f"round {round_} airbench94_muon{label}: {figures[-1]:.1f} s per full epoch", flush=True)
        ours = run_cnnlab(args.python, sub, round_, os.path.join(tmp, f"cnnlab-{round_}"), env, ["--no-adapt"])
        times = [r["time_s"] for r in ours["history"]]
        ours_epochs = ours["config"]["config"]["epochs"]
        ours_epoch.append(seconds_per_step(times, steps) * full_steps)
        print(f"round {round_} cnnlab fast94: {ours_epoch[-1]:.1f} s per full epoch", flush=True)
    peer_s = statistics.median(peer_epoch) * peer_epochs
    ours_s = statistics.median(ours_epoch) * ours_epochs
    print(
        f"airbench94_muon: {statistics.median(peer_epoch):.1f} s/epoch x {peer_epochs} epochs = {peer_s:.0f} s; "
        f"accuracy {100 * peer_acc:.2f}% ({'given' if args.peer_acc is not None else ', '.join(args.peer_json)})"
    )
    print(
        f"cnnlab fast94: {statistics.median(ours_epoch):.1f} s/epoch x {ours_epochs} epochs = {ours_s:.0f} s; "
        f"accuracy {100 * ours_acc:.2f}% ({'given' if args.cnnlab_acc is not None else ', '.join(args.cnnlab_runs)})"
    )
    if tuned_epoch:
        tuned_s = statistics.median(tuned_epoch) * peer_epochs
        print(
            f"airbench94_muon with cnnlab's malloc settings ({' '.join(f'{k}={v}' for k, v in PEER_MALLOC.items())}): "
            f"{statistics.median(tuned_epoch):.1f} s/epoch x {peer_epochs} epochs = {tuned_s:.0f} s; "
            f"ratio cnnlab/that: {ours_s / tuned_s:.2f}"
        )
    method = (
        f"method: throughput, {args.rounds} interleaved round(s) of each recipe's {ours_epochs}/{peer_epochs} "
        f"epochs on {n_sub} images; median seconds per step x {full_steps} steps x epochs; accuracies from full "
        "runs; times exclude the final TTA evaluation"
    )
    return ours_acc, ours_s, peer_acc, peer_s, method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=os.environ.get("CNNLAB_DATA", os.path.join(ROOT, "..", "shared", "datasets", "cifar10"))
    )
    parser.add_argument("--method", choices=["full", "throughput"], default="full")
    parser.add_argument("--seeds", type=int, default=3, help="full: seeds per recipe")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: interleaved rounds")
    parser.add_argument("--steps-per-epoch", type=int, default=2, help="throughput: steps of 2,000 images per epoch")
    parser.add_argument(
        "--peer-malloc-tuned",
        action="store_true",
        help="throughput: each round also runs the peer with cnnlab's malloc settings (glibc "
        "environment variables), printed as a further ratio",
    )
    parser.add_argument("--cnnlab-acc", type=float, help="throughput: cnnlab fast94's accuracy (a fraction)")
    parser.add_argument("--cnnlab-runs", nargs="*", default=[], help="throughput: fast94 run directories")
    parser.add_argument("--peer-acc", type=float, help="throughput: the peer's accuracy (a fraction)")
    parser.add_argument("--peer-json", nargs="*", default=[], help="throughput: files of the peer's output")
    parser.add_argument(
        "--out",
        help="full: keep cnnlab's runs (OUT/cnnlab-SEED) and the peer's output "
        "(OUT/peer-SEED.txt) here, for a later --cnnlab-runs / --peer-json",
    )
    parser.add_argument("--python", default=sys.executable, help="the Python that runs both (default: this one)")
    parser.add_argument(
        "--peer", default=PEER, help="the peer script (default: ../shared/peers/airbench94_muon_cpu.py)"
    )
    args = parser.parse_args()
    if not os.path.isfile(args.peer):
        sys.exit(f"{args.peer}: the peer script is missing")
    if args.method == "throughput" and args.cnnlab_acc is None and not args.cnnlab_runs:
        sys.exit("--method throughput needs cnnlab's accuracy from full runs: --cnnlab-acc or --cnnlab-runs")
    if args.method == "throughput" and args.peer_acc is None and not args.peer_json:
        sys.exit("--method throughput needs the peer's accuracy from full runs: --peer-acc or --peer-json")
    with tempfile.TemporaryDirectory() as tmp:
        # cnnlab importable without installing it; the decode caches of a throughput subset (its paths are
        # temporary) kept in the temporary folder, those of the full data where each program keeps them
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
        if args.method == "throughput":
            env.update(TMPDIR=tmp, CNNLAB_CACHE=os.path.join(tmp, "cache"))
        print(
            f"data {os.path.abspath(args.data)}, {os.cpu_count()} cores, peer {os.path.abspath(args.peer)}", flush=True
        )
        ours_acc, ours_s, peer_acc, peer_s, method = (full if args.method == "full" else throughput)(args, env, tmp)
    print(method)
    if min(ours_acc, peer_acc) < TARGET:
        print(
            f"note: {'cnnlab' if ours_acc < TARGET else 'airbench94_muon'} is below 94% here: the ratio compares "
            "the recipes' times, not times to 94%"
        )
    print(ratio_line(ours_acc, ours_s, peer_acc, peer_s))


if __name__ == "__main__":
    main()
