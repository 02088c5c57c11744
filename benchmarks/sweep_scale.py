"""How the cost of sweeps and searches grows with the number of runs: a TPE search of --trials trials and
a grid sweep of --trials runs (cells x --seeds), each on an Optuna journal file and on PostgreSQL, on a
tiny dataset (10 classes of 8x8 PNGs, fastnet, one epoch) so that the training is short and the
storage, the results listing and the report are what grows.

    python benchmarks/sweep_scale.py                      # 300 trials; sizes 30,100,300
    python benchmarks/sweep_scale.py --trials 48 --seeds 3 --sizes 12,48 --no-record   # a quick look

Measured in this process (the cnnlab calls are wrapped, the training is not timed):
- per-trial storage overhead, ms: the claim (lock, dead-worker check, picking and asking the trial;
  for the search without the TPE proposal, Optuna's sampler, timed apart), the first heartbeat, and the
  result (user attributes and tell), as a median over the first, a middle and the last tenth of the trials;
- at each of --sizes finished runs: the results listing (what a resumed `cnnlab sweep` prints: the
  study opened, the results computed and formatted) and `cnnlab report` (build_report, its plots);
- the growth exponent of each, log(time ratio) / log(N ratio) between the smallest and largest N
  (1.0 is linear); for a storage step, of its total over the runs, from the per-trial medians.
PostgreSQL: --postgres URL (default $CNNLAB_TEST_POSTGRES; without one it is skipped), a fresh study
per run, deleted afterwards; the URL is recorded redacted. Writes benchmarks/records/sweep_scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from record import write_record

from cnnlab import report as report_mod
from cnnlab import search, studies, sweep
from cnnlab.cli import main as cnnlab_main
from cnnlab.sweep import running
from cnnlab.tracking import redact

CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS, SIZE = 10, 10, 2, 8
TINY = ["--model", "fastnet", "--epochs", "1", "--batch-size", "32", "--eval-batch-size", "256", "--threads", "1"]
TINY += ["--input-size", "32", "--no-progress", "--no-tta", "--schedule", "constant", "--warmup-epochs", "0"]
TINY += ["--log", "none"]


def make_tiny(root: str) -> str:
    """root/train and root/test: CLASSES classes of SIZE x SIZE PNGs, a base colour per class plus noise."""
    rng = np.random.default_rng(0)
    for part, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for k in range(CLASSES):
            os.makedirs(os.path.join(root, part, f"c{k}"))
            for i in range(count):
                base = np.full((SIZE, SIZE, 3), 25 * k, dtype=np.int16)
                pixels = (base + rng.integers(0, 40, base.shape)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, part, f"c{k}", f"{i:03d}.png"))
    return root


@dataclass
class Probe:
    """What the wrapped cnnlab calls measured: ms per trial of each storage step, and at each size
    the listing and report times."""

    sizes: list[int]
    measure_at: object = None  # callable(n) -> dict, run when n runs have finished
    trained: int = 0
    per_trial: dict[str, list[float]] = field(default_factory=lambda: {"claim": [], "heartbeat": [], "result": []})
    proposal: float = 0.0  # the TPE proposal inside the current claim, s
    at_size: dict[int, dict] = field(default_factory=dict)

    @contextlib.contextmanager
    def installed(self):
        """Wrap studies.claim, Heartbeat.beat, search.suggest and the work loops' finish for one run."""
        claim, beat, suggest = studies.claim, studies.Heartbeat.beat, search.suggest
        loops = running.work_loop, search.work_loop
        probe = self

        def timed_claim(out, study, pick):
            if probe.trained in probe.sizes and probe.trained not in probe.at_size:
                probe.at_size[probe.trained] = probe.measure_at(probe.trained)
            probe.proposal = 0.0
            start = time.perf_counter()
            claimed = claim(out, study, pick)
            if claimed is not None:
                probe.per_trial["claim"].append(1000 * (time.perf_counter() - start - probe.proposal))
                if probe.proposal:
                    probe.per_trial.setdefault("tpe proposal", []).append(1000 * probe.proposal)
            return claimed

        def timed_beat(self):
            start = time.perf_counter()
            beat(self)
            probe.per_trial["heartbeat"].append(1000 * (time.perf_counter() - start))

        def timed_suggest(trial, space):
            start = time.perf_counter()
            params = suggest(trial, space)
            probe.proposal += time.perf_counter() - start
            return params

        def timed_loop(original):
            def loop(out, study, pick, train, finish):
                def counted_train(claimed):
                    try:
                        return train(claimed)
                    finally:
                        probe.trained += 1

                def timed_finish(claimed, result):
                    start = time.perf_counter()
                    finish(claimed, result)
                    probe.per_trial["result"].append(1000 * (time.perf_counter() - start))

                return original(out, study, pick, counted_train, timed_finish)

            return loop

        studies.claim, studies.Heartbeat.beat, search.suggest = timed_claim, timed_beat, timed_suggest
        running.work_loop, search.work_loop = timed_loop(loops[0]), timed_loop(loops[1])
        try:
            yield self
        finally:
            studies.claim, studies.Heartbeat.beat, search.suggest = claim, beat, suggest
            running.work_loop, search.work_loop = loops


def timed(fn, repeat: int = 1) -> float:
    """The best of `repeat` timings of fn(), s."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def grid_args(runs: int, seeds: int) -> list[str]:
    """A two-key grid (lr x momentum, rows x cols as square as the cell count allows) of runs / seeds cells."""
    cells = runs // seeds
    if cells * seeds != runs:
        raise SystemExit(f"--trials {runs} is not a multiple of --seeds {seeds}")
    rows = max(d for d in range(1, math.isqrt(cells) + 1) if cells % d == 0)
    lrs = ",".join(f"{0.01 + 0.001 * i:.3f}" for i in range(cells // rows))
    momenta = ",".join(f"{0.5 + 0.04 * i:.2f}" for i in range(rows))
    return ["--grid", f"lr={lrs}", "--grid", f"momentum={momenta}", "--seeds", str(seeds)]


def listing(kind: str, out: str, storage: str | None, name: str) -> str:
    """What a resumed `cnnlab sweep` prints as its table, from a freshly opened study."""
    if kind == "sweep":
        return sweep.format_table(sweep.results(out, storage, name))
    study = studies.open_study(out, storage, name)
    return search.format_search(search.search_results(study, 0))


def measure_size(kind: str, out: str, storage: str | None, name: str) -> dict:
    """The listing's and the report's times, s (best of 3), with the runs finished so far."""
    list_s = timed(lambda: listing(kind, out, storage, name), repeat=3)
    if kind == "sweep":  # a sweep writes results.json at its end; the report reads it
        sweep.save_results(out, sweep.results(out, storage, name))
    return {"listing_s": list_s, "report_s": timed(lambda: report_mod.build_report(out), repeat=3)}


def run_one(kind: str, backend: str, data: str, work: str, args: argparse.Namespace) -> dict:
    """One search or sweep of args.trials runs on one storage; its per-trial and per-size figures."""
    out = os.path.join(work, f"{kind}-{backend}")
    name = f"sweepscale-{kind}-{uuid.uuid4().hex[:8]}" if backend == "postgres" else "cnnlab"
    storage = args.postgres if backend == "postgres" else None
    os.environ.pop(studies.STORAGE_ENV, None)
    if storage:
        os.environ[studies.STORAGE_ENV] = storage  # never on a command line
    if kind == "search":
        spec = ["--search", "tpe", "--trials", str(args.trials), "--param", "lr=0.005..0.5:log"]
        spec += ["--param", "momentum=0.5..0.95"]
    else:
        spec = grid_args(args.trials, args.seeds)
    probe = Probe(sorted(args.sizes))
    probe.measure_at = lambda n: measure_size(kind, out, storage, name)
    start = time.perf_counter()
    try:
        log = os.path.join(work, f"{kind}-{backend}.log")  # its messages (one per pruned trial)
        with (
            open(log, "w") as sink,
            probe.installed(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            code = cnnlab_main(["sweep", *spec, "--data", data, "--out", out, "--study", name, *TINY])
        if code != 0:
            raise SystemExit(f"{kind} on {backend}: cnnlab sweep exited {code}: {open(log).read()[-2000:]}")
        total_s = time.perf_counter() - start
        failed = [line for line in open(log) if " failed: " in line]  # pruned trials are fine: trained in full
        if failed or probe.trained != args.trials:
            raise SystemExit(f"{kind} on {backend}: {probe.trained} of {args.trials} trials trained; {failed[:1]}")
        cli = [sys.executable, "-m", "cnnlab", "report", out]
        report_cli_s = timed(lambda: subprocess.run(cli, check=True, stdout=subprocess.DEVNULL))
    finally:
        os.environ.pop(studies.STORAGE_ENV, None)
        if storage:
            import optuna

            with contextlib.suppress(Exception):
                optuna.delete_study(study_name=name, storage=storage)
    return {"kind": kind, "backend": backend, "total_s": total_s, "report_cli_s": report_cli_s, **summarize(probe)}


def windows(n: int) -> list[tuple[int, int]]:
    """The first, a middle and the last tenth of n trials (1-based, inclusive): 1-30, 100-130, 271-300."""
    w = max(1, n // 10)
    mid = max(w + 1, n // 3)
    return [(1, w), (mid, min(n, mid + w - 1)), (n - w + 1, n)]


def exponent(small: tuple[float, float], large: tuple[float, float]) -> float | None:
    """log(t_large / t_small) / log(n_large / n_small) for (n, t) pairs."""
    (n0, t0), (n1, t1) = small, large
    if t0 <= 0 or t1 <= 0 or n0 == n1:
        return None
    return math.log(t1 / t0) / math.log(n1 / n0)


def summarize(probe: Probe) -> dict:
    """Per storage step: the median ms per trial in each window (medians: a loaded machine's stalls
    are spikes), and the growth exponent of the step's total, 1 + log(last / first window's median) /
    log(their midpoints' ratio): a per-trial cost proportional to N^a makes the total grow as N^(1+a)."""
    steps = {}
    for step, values in probe.per_trial.items():
        spans = windows(len(values)) if values else []
        medians = [statistics.median(values[a - 1 : b]) for a, b in spans]
        mids = [(a + b) / 2 for a, b in spans]
        exp = None
        if len(spans) > 1 and mids[-1] > mids[0] and medians[0] > 0:
            exp = 1 + math.log(medians[-1] / medians[0]) / math.log(mids[-1] / mids[0])
        steps[step] = {
            "n": len(values),
            "median_ms_by_window": {f"{a}-{b}": m for (a, b), m in zip(spans, medians)},
            "total_s": sum(values) / 1000,
            "total_exponent": exp,
        }
    sizes = sorted(probe.at_size)
    growth = {}
    if len(sizes) > 1:
        for what in ("listing_s", "report_s"):
            small, large = probe.at_size[sizes[0]][what], probe.at_size[sizes[-1]][what]
            growth[what] = exponent((sizes[0], small), (sizes[-1], large))
    return {"storage_ms": steps, "at_size": probe.at_size, "growth": growth}


def table(rows: list[dict]) -> str:
    """The printed table: one block per search/sweep and storage."""
    lines = []
    for row in rows:
        lines.append(
            f"== {row['kind']} on {row['backend']}: {row['total_s']:.0f} s in all; "
            f"`cnnlab report` at the end {row['report_cli_s']:.1f} s (CLI, with imports)"
        )
        head = None
        for step, fig in row["storage_ms"].items():
            if head is None:
                head = (
                    "  storage ms/trial  "
                    + "".join(f"{w:>12}" for w in fig["median_ms_by_window"])
                    + f"{'exponent':>10}"
                )
                lines.append(head)
            exp = fig["total_exponent"]
            lines.append(
                f"  {step:<18}"
                + "".join(f"{v:>12.1f}" for v in fig["median_ms_by_window"].values())
                + f"{'-' if exp is None else f'{exp:.2f}':>10}"
            )
        sizes = sorted(row["at_size"])
        lines.append("  at N runs         " + "".join(f"{s:>12}" for s in sizes) + f"{'exponent':>10}")
        for what in ("listing_s", "report_s"):
            exp = row["growth"].get(what)
            lines.append(
                f"  {what:<18}"
                + "".join(f"{row['at_size'][s][what]:>12.3f}" for s in sizes)
                + f"{'-' if exp is None else f'{exp:.2f}':>10}"
            )
    lines.append(
        "storage: median ms per trial in the first, a middle and the last tenth of the trials; its exponent is "
        "the total's (1.0 = linear: a constant cost per trial); listing/report: best of 3, exponent between "
        "the smallest and the largest N"
    )
    return "\n".join(lines)


def tables(rows: list[dict]) -> dict:
    """The record's tables for the docs' benchmarks page: storage ms per trial, listing and report."""
    spans = list(rows[0]["storage_ms"]["claim"]["median_ms_by_window"]) if rows else []
    storage = [
        [row["kind"], row["backend"], step, *fig["median_ms_by_window"].values(), fig["total_exponent"]]
        for row in rows
        for step, fig in row["storage_ms"].items()
    ]
    sizes = sorted(rows[0]["at_size"], key=int) if rows else []
    shown = [
        [row["kind"], row["backend"], what, *(row["at_size"][n][what] for n in sizes), row["growth"].get(what)]
        for row in rows
        for what in ("listing_s", "report_s")
    ]
    return {
        "storage ms per trial (median of the trials' first, a middle and the last tenth)": {
            "columns": ["run by", "storage", "step", *(f"trials {w}" for w in spans), "exponent of the total"],
            "rows": storage,
        },
        "listing and report, s (best of 3) at N finished runs": {
            "columns": ["run by", "storage", "what", *(f"N={n}" for n in sizes), "exponent"],
            "rows": shown,
        },
        "whole runs": {
            "columns": ["run by", "storage", "all trials, s", "`cnnlab report` command, s"],
            "rows": [[row["kind"], row["backend"], row["total_s"], row["report_cli_s"]] for row in rows],
        },
    }


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=300, help="runs of the search and of the sweep (default 300)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per grid cell (default 3: 100 cells)")
    p.add_argument("--sizes", default="30,100,300", help="run counts at which listing and report are timed")
    p.add_argument("--postgres", default=os.environ.get("CNNLAB_TEST_POSTGRES"), help="PostgreSQL URL")
    p.add_argument("--only", choices=("search", "sweep"), help="only the search or only the sweep")
    p.add_argument("--no-record", action="store_true", help="print only; do not write the record")
    args = p.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if max(args.sizes) > args.trials:
        p.error(f"--sizes: at most --trials ({args.trials})")
    return args


def main() -> None:
    args = parse()
    backends = ["journal"] + (["postgres"] if args.postgres else [])
    if not args.postgres:
        print("PostgreSQL skipped: give --postgres URL or set CNNLAB_TEST_POSTGRES", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="sweepscale-")
    os.environ["CNNLAB_CACHE"] = os.path.join(work, "cache")
    rows = []
    try:
        data = make_tiny(os.path.join(work, "data"))
        for kind in [args.only] if args.only else ["search", "sweep"]:
            for backend in backends:
                rows.append(run_one(kind, backend, data, work, args))
                print(table(rows[-1:]), file=sys.stderr, flush=True)  # each as it ends; all on stdout at the end
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    if not args.no_record:
        results = {
            "trials": args.trials,
            "seeds": args.seeds,
            "sizes": args.sizes,
            "data": f"{CLASSES} classes x {TRAIN_PER_CLASS} train + {TEST_PER_CLASS} test PNGs of {SIZE}x{SIZE}",
            "postgres": redact(args.postgres, args.postgres) if args.postgres else None,
            "load_average": os.getloadavg(),
            "rows": rows,
            "tables": tables(rows),
        }
        command = " ".join([os.path.basename(sys.executable), *sys.argv])
        if args.postgres:
            command = redact(command, args.postgres)
        figure = "sweep/search cost vs number of runs (storage, listing, report)"
        print(write_record("sweep_scale", figure, results, command=command))


if __name__ == "__main__":
    main()
