"""cnnlab's fast94 preset side by side with airbench94_muon (the peer) on this machine, interleaved.

    python benchmarks/vs_airbench.py [--data DIR] [--method full] [--seeds 3] [--out DIR]
    python benchmarks/vs_airbench.py --method throughput [--rounds 3] [--steps-per-epoch 2]
        (--cnnlab-acc 0.9412 | --cnnlab-runs RUN_DIR ...) (--peer-acc 0.9401 | --peer-json FILE ...)
    either with [--precision auto|fp32|bf16] [--compile] [--as-published]

The peer is ../shared/peers/airbench94_muon_cpu.py (MIT), run unmodified in its own process; cnnlab runs
`python -m cnnlab train --preset fast94` in its own process too, so that neither inherits the other's
memory or threads. They alternate: peer, cnnlab, peer, cnnlab ...

On equal terms (the default): both in the same precision (--precision, resolved here as cnnlab resolves
it, then given to both), both compiled or neither (--compile), and the peer under the glibc malloc settings
cnnlab gives itself on a CPU (cnnlab.device.tune_host_allocator, as glibc's environment variables; none on
a GPU, where cnnlab sets none). With --as-published each seed or round also runs the peer as it is published
(its own precision choice and malloc; compiled on CUDA, as airbench is), for a second ratio line. A compiled
run's training time holds its compilation (airbench's published times do not: it compiles in a warm-up run),
so where one is compiled the warm epochs' ratio (full runs) is the one to read.

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
peer's output (its JSON lines with "tta_acc"). The medians over rounds are compared.

Prints each run's figures (in full runs also the mean time of its warm epochs, those after the first, which
holds compilation, cuDNN's algorithm search and lazy loading), the method, the terms, and the ratio:
    ratio cnnlab/airbench94_muon time to 94%, on equal terms (fp32, ...): 0.NN (cnnlab NN.NN% in N s, ...)
    ratio cnnlab/airbench94_muon time to 94%, peer as published: 0.NN (...)        (with --as-published)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # cnnlab from this tree, as the runs use it
from cnnlab.device import MALLOC_ENV, resolve_device, runs_on_glibc, use_bf16  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

PEER = os.path.join(ROOT, "..", "shared", "peers", "airbench94_muon_cpu.py")
BATCH = 2000  # both recipes' batch size
TARGET = 0.94
# cnnlab.device.tune_host_allocator's mallopt settings, as glibc's environment variables: the peer on equal terms
PEER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str((1 << 31) - 1)}


@dataclass(frozen=True)
class PeerTerms:
    """How the peer runs: its label in the output, what is added to its environment and its command line."""

    label: str
    env: dict
    args: tuple[str, ...]


@dataclass(frozen=True)
class Terms:
    """cnnlab's command-line additions, and the peer's terms: equal ones first, then as published if asked."""

    cnnlab_args: tuple[str, ...]
    peers: tuple[PeerTerms, ...]


def terms(precision: str, compile_: bool, as_published: bool) -> Terms:
    """Equal terms: one precision for both (resolved here as cnnlab resolves it), both compiled or neither, and
    the peer under the malloc settings cnnlab gives itself (on a CPU, glibc, unless CNNLAB_MALLOC_TUNING=0)."""
    device = resolve_device("auto")
    chosen = "bf16" if use_bf16(precision, device) else "fp32"
    tuned = device.type == "cpu" and os.environ.get(MALLOC_ENV, "1") != "0" and runs_on_glibc()
    shared = ("--precision", chosen) + (("--compile",) if compile_ else ())
    words = [chosen, "both compiled" if compile_ else "neither compiled"]
    words.append("the peer under cnnlab's malloc settings" if tuned else "malloc as it is for both")
    peers = [PeerTerms(f"on equal terms ({', '.join(words)})", PEER_MALLOC if tuned else {}, shared)]
    if as_published:  # the peer's own precision choice and malloc; compiled on CUDA as airbench is
        peers.append(PeerTerms("peer as published", {}, ("--compile",) if device.type == "cuda" else ()))
    return Terms(shared, tuple(peers))


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


def run_peer(
    python: str, peer: str, data: str, seed: int, env: dict, terms_: PeerTerms, keep: str | None = None
) -> dict:
    output = run([python, peer, data, "--seed", str(seed), *terms_.args], {**env, **terms_.env})
    if keep:  # for a later --peer-json
        with open(keep, "w") as fh:
            fh.write(output)
    results = peer_results(output)
    if not results:
        sys.exit("the peer printed no result line")
    return results[-1]


def peer_epoch_times(result: dict) -> list[float]:
    """Each epoch's training seconds, from the peer's cumulative per-epoch figures."""
    cumulative = [e["train_s"] for e in result["per_epoch"]]
    return [b - a for a, b in zip([0.0] + cumulative, cumulative)]


def warm_epoch_s(epoch_times: list[float]) -> float:
    """The mean over the epochs after the first (the first holds compilation, cuDNN's algorithm search, lazy
    loading and allocations)."""
    return statistics.mean(epoch_times[1:] or epoch_times)


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


def ratio_line(label: str, cnnlab_acc: float, cnnlab_s: float, peer_acc: float, peer_s: float) -> str:
    return (
        f"ratio cnnlab/airbench94_muon time to 94%, {label}: {cnnlab_s / peer_s:.2f} (cnnlab "
        f"{100 * cnnlab_acc:.2f}% in {cnnlab_s:.1f} s, airbench94_muon {100 * peer_acc:.2f}% in {peer_s:.1f} s)"
    )


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f}% +/- {100 * std:.2f}"


def full(args, env: dict, tmp: str, terms_: Terms) -> tuple[tuple[float, float], dict, str]:
    """Full runs, seeds interleaved: (cnnlab's mean accuracy and seconds, {peer terms: the same}, the method)."""
    ours: dict[str, list[float]] = {"acc": [], "s": [], "warm": []}
    peers = {t.label: {"acc": [], "s": [], "warm": []} for t in terms_.peers}
    out = args.out or tmp
    os.makedirs(out, exist_ok=True)
    for seed in range(args.seeds):
        for i, peer_terms in enumerate(terms_.peers):
            keep = os.path.join(out, f"peer-{seed}.txt" if i == 0 else f"peer-published-{seed}.txt")
            result = run_peer(args.python, args.peer, args.data, seed, env, peer_terms, keep)
            figures = peers[peer_terms.label]
            add(figures, result["tta_acc"], result["train_s"] - result["tta_s"], peer_epoch_times(result))
            print(f"seed {seed} airbench94_muon {peer_terms.label}: {line(figures)}", flush=True)
        run_ = run_cnnlab(args.python, args.data, seed, os.path.join(out, f"cnnlab-{seed}"), env, terms_.cnnlab_args)
        metrics = run_["metrics"]
        add(ours, metrics["test"]["accuracy"], metrics["train_time_s"], [r["time_s"] for r in run_["history"]])
        print(f"seed {seed} cnnlab fast94: {line(ours)}", flush=True)
    for label, figures in peers.items():
        print(f"airbench94_muon {label} over {args.seeds} seeds: {summary(figures)}")
    print(f"cnnlab fast94 over {args.seeds} seeds: {summary(ours)}")
    for label, figures in peers.items():  # without the first epoch's one-time work (compiling, cuDNN's search)
        ratio = statistics.mean(ours["warm"]) / statistics.mean(figures["warm"])
        print(f"ratio cnnlab/airbench94_muon of warm epochs' time, {label}: {ratio:.2f}")
    method = (
        f"method: full runs, {args.seeds} seed(s) each, interleaved; means over seeds; times exclude the final "
        "TTA evaluation"
    )
    means = {label: (statistics.mean(f["acc"]), statistics.mean(f["s"])) for label, f in peers.items()}
    return (statistics.mean(ours["acc"]), statistics.mean(ours["s"])), means, method


def add(figures: dict, acc: float, seconds: float, epoch_times: list[float]) -> None:
    figures["acc"].append(acc)
    figures["s"].append(seconds)
    figures["warm"].append(warm_epoch_s(epoch_times))


def line(figures: dict) -> str:
    """A run's figures: accuracy, training seconds, its warm epochs' mean seconds."""
    return f"{100 * figures['acc'][-1]:.2f}% in {figures['s'][-1]:.1f} s (warm epochs {figures['warm'][-1]:.2f} s each)"


def summary(figures: dict) -> str:
    return (
        f"{mean_std(figures['acc'])}, {statistics.mean(figures['s']):.1f} s, warm epochs "
        f"{statistics.mean(figures['warm']):.2f} s each"
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
    return warm_epoch_s(epoch_times) / steps_per_epoch


def throughput(args, env: dict, tmp: str, terms_: Terms) -> tuple[tuple[float, float], dict, str]:
    """Subset runs, rounds interleaved: (cnnlab's accuracy and projected seconds, {peer terms: the same}, the
    method); the accuracies come from full runs (the peer's apply to each of its terms)."""
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
    peer_epoch = {t.label: [] for t in terms_.peers}
    ours_epoch, peer_epochs, ours_epochs = [], 8, None
    for round_ in range(args.rounds):
        for peer_terms in terms_.peers:
            times = peer_epoch_times(run_peer(args.python, args.peer, sub, round_, env, peer_terms))
            peer_epochs = len(times)
            peer_epoch[peer_terms.label].append(seconds_per_step(times, steps) * full_steps)
            print(
                f"round {round_} airbench94_muon {peer_terms.label}: {peer_epoch[peer_terms.label][-1]:.2f} s per full epoch",
                flush=True,
            )
        extra = ["--no-adapt", *terms_.cnnlab_args]
        ours = run_cnnlab(args.python, sub, round_, os.path.join(tmp, f"cnnlab-{round_}"), env, extra)
        times = [r["time_s"] for r in ours["history"]]
        ours_epochs = ours["config"]["config"]["epochs"]
        ours_epoch.append(seconds_per_step(times, steps) * full_steps)
        print(f"round {round_} cnnlab fast94: {ours_epoch[-1]:.2f} s per full epoch", flush=True)
    peers = {}
    for label, figures in peer_epoch.items():
        peers[label] = (peer_acc, statistics.median(figures) * peer_epochs)
        print(
            f"airbench94_muon {label}: {statistics.median(figures):.2f} s/epoch x {peer_epochs} epochs = "
            f"{peers[label][1]:.0f} s; accuracy {100 * peer_acc:.2f}% "
            f"({'given' if args.peer_acc is not None else ', '.join(args.peer_json)})"
        )
    ours_s = statistics.median(ours_epoch) * ours_epochs
    print(
        f"cnnlab fast94: {statistics.median(ours_epoch):.2f} s/epoch x {ours_epochs} epochs = {ours_s:.0f} s; "
        f"accuracy {100 * ours_acc:.2f}% ({'given' if args.cnnlab_acc is not None else ', '.join(args.cnnlab_runs)})"
    )
    method = (
        f"method: throughput, {args.rounds} interleaved round(s) of each recipe's {ours_epochs}/{peer_epochs} "
        f"epochs on {n_sub} images; median seconds per step x {full_steps} steps x epochs; accuracies from full "
        "runs; times exclude the final TTA evaluation"
    )
    return (ours_acc, ours_s), peers, method


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=os.environ.get("CNNLAB_DATA", os.path.join(ROOT, "..", "shared", "datasets", "cifar10"))
    )
    parser.add_argument("--method", choices=["full", "throughput"], default="full")
    parser.add_argument("--seeds", type=int, default=3, help="full: seeds per recipe")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: interleaved rounds")
    parser.add_argument("--steps-per-epoch", type=int, default=2, help="throughput: steps of 2,000 images per epoch")
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="both recipes' precision (auto: as cnnlab chooses on this machine)",
    )
    parser.add_argument("--compile", action="store_true", help="both recipes torch.compiled")
    parser.add_argument(
        "--as-published",
        action="store_true",
        help="each seed or round also runs the peer as published (its own precision and malloc; compiled on "
        "CUDA), printed as a second ratio",
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
    return parser.parse_args()


def main() -> None:
    args = parse_args()
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
        terms_ = terms(args.precision, args.compile, args.as_published)
        measure = full if args.method == "full" else throughput
        (ours_acc, ours_s), peers, method = measure(args, env, tmp, terms_)
    print(method)
    for label, (peer_acc, _) in peers.items():
        if min(ours_acc, peer_acc) < TARGET:
            print(
                f"note: {'cnnlab' if ours_acc < TARGET else 'airbench94_muon'} is below 94% here: the ratio "
                f"{label} compares the recipes' times, not times to 94%"
            )
    rows = []
    for label, (peer_acc, peer_s) in peers.items():  # equal terms first
        print(ratio_line(label, ours_acc, ours_s, peer_acc, peer_s))
        rows.append([label, f"{100 * ours_acc:.2f}", f"{ours_s:.0f}", f"{100 * peer_acc:.2f}", f"{peer_s:.0f}"])
        rows[-1].append(f"{ours_s / peer_s:.2f}")
    columns = ["peer's terms", "fast94 %", "fast94 s", "airbench94_muon %", "airbench94_muon s", "time ratio"]
    results = {
        "method": method,
        "cnnlab": {"accuracy": ours_acc, "seconds": ours_s},
        "peer": {label: {"accuracy": a, "seconds": t} for label, (a, t) in peers.items()},
        "tables": {"fast94 against airbench94_muon": {"columns": columns, "rows": rows}},
    }
    print(write_record("vs_airbench", "fast94 against airbench94_muon on this machine", results))


if __name__ == "__main__":
    main()
