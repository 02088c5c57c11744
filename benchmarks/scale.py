"""How cnnlab's cost grows with the number of images: listing, the cache key, the decode into the cache, a
cached reload, the first training batch and peak memory, beside Keras's image_dataset_from_directory and a
plain os.scandir walk (the floor), at N = 10k, 100k and 300k images.

    python benchmarks/scale.py [--sizes 10000 100000 300000] [--classes 10 1000] [--kinds cifar photo]
        [--keras-python /work/keras-venv/bin/python] [--train]

Folders are built under /tmp/cnnlab-scale, never in the repository: `cifar` symlinks CIFAR-10's 32x32 PNGs
(repeated past 55,000), `photo` symlinks a pool of 500x375 JPEGs re-encoded from CIFAR images (upscaled,
with grain so that they compress as photos do). Each step runs in a fresh process; wall time and its peak
RSS (wait4) are taken from outside, the step's own time inside:

  walk     the floor: os.scandir over the class folders, names only (no sort, no stat)
  scan     cnnlab's listing: the classes and files in Keras's order (what the Found lines count)
  key      the decode cache's key: each file's size and mtime (one stat a file), beside a walk that stats
  decode   load_dataset into an empty cache (photo: at 64x64; cifar: at 32x32), images/s per core
  reload   load_dataset of the same folder from the cache
  first    `cnnlab train` from process start to its first training step done (cached)
  keras    image_dataset_from_directory: its listing, and from process start to its first batch
  train    (--train, photo at the largest N) a whole epoch read from the 64x64 cache at input 16x16, so
           that every stored row is read: peak RSS beside the cache's size

Growth exponent of a step: log(t(N2) / t(N1)) / log(N2 / N1); 1.0 is linear. Record: records/scale.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from record import write_record  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = "/tmp/cnnlab-scale"
PHOTO_POOL = 2000  # distinct photo-size JPEGs; the folders symlink them
STORED = {"cifar": 32, "photo": 64}
KERAS_STEP = """
import json, sys, time
start = float(sys.argv[3])
import tensorflow as tf
t = time.perf_counter()
ds = tf.keras.utils.image_dataset_from_directory(sys.argv[1], image_size=(int(sys.argv[2]),) * 2, batch_size=256, seed=0)
listed = time.perf_counter() - t
next(iter(ds))
print(json.dumps({"seconds": listed, "to_first_batch": time.time() - start}))
"""


# ---- building the folders ----


def photo_pool(data: str) -> list[str]:
    """PHOTO_POOL JPEGs of 500x375 (made once): CIFAR training images upscaled, with grain."""
    from PIL import Image

    folder = os.path.join(WORK, "photo-pool")
    paths = [os.path.join(folder, f"{i:05d}.jpg") for i in range(PHOTO_POOL)]
    if all(os.path.exists(p) for p in paths):
        return paths
    os.makedirs(folder, exist_ok=True)
    sources = cifar_sources(data)
    rng = np.random.default_rng(0)
    for i, path in enumerate(paths):
        with Image.open(sources[i * 17 % len(sources)]) as img:
            big = np.asarray(img.convert("RGB").resize((500, 375), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.normal(0, 10, big.shape).astype(np.int16)
        Image.fromarray((big + grain).clip(0, 255).astype(np.uint8)).save(path + ".tmp", "JPEG", quality=90)
        os.replace(path + ".tmp", path)
    return paths


def cifar_sources(data: str) -> list[str]:
    out = []
    for split in ("train", "test"):
        base = os.path.join(data, split)
        for name in sorted(os.listdir(base)):
            out.extend(os.path.join(base, name, f) for f in sorted(os.listdir(os.path.join(base, name))))
    return out


def build(kind: str, n: int, classes: int, sources: list[str]) -> str:
    """WORK/KIND-N-CLASSES/<class>/<file>: N symlinks spread over `classes` folders (kept between runs)."""
    root = os.path.join(WORK, f"{kind}-{n}-{classes}")
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    shutil.rmtree(root, ignore_errors=True)
    ext = os.path.splitext(sources[0])[1]
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class{c:04d}"))
    for i in range(n):
        os.symlink(sources[i % len(sources)], os.path.join(root, f"class{i % classes:04d}", f"{i:07d}{ext}"))
    open(done, "w").close()
    return root


# ---- the steps, each in a child process ----


def walk(root: str, stat: bool = False) -> int:
    """Files under root by os.scandir (the floor): their paths, unsorted, or with a stat each."""
    found, stack = [], [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif not entry.name.startswith("."):
                    found.append(entry.path)
                    if stat:
                        entry.stat()
    return len(found)


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of the worker processes it has waited for."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def fast_decoding(root: str, size: int):
    """How `cnnlab train --preset fast --image-size SIZE` decodes the folder."""
    from cnnlab.data import Decoding
    from cnnlab.presets import preset

    cfg = preset("fast", data=root, image_size=size)
    return Decoding(image_size=(size, size), interpolation=cfg.interpolation, resize=cfg.resize, exif=cfg.exif)


def child(step: str, root: str, size: int) -> dict:
    """One step, timed inside the process: wall seconds and CPU seconds (the latter hardly moved by other
    work on the machine, so that the growth exponents of a loaded machine still mean something); with
    SCALE_REPEAT=k, the least of k runs of each."""
    runs = [one_step(step, root, size) for _ in range(int(os.environ.get("SCALE_REPEAT", "1")))]
    return {"seconds": min(r["seconds"] for r in runs), "cpu": min(r["cpu"] for r in runs), "found": runs[0]["found"]}


def one_step(step: str, root: str, size: int) -> dict:
    if step in ("walk", "walk_stat"):  # no cnnlab import: the floor's memory is Python's own
        start, cpu = time.perf_counter(), cpu_seconds()
        found = walk(root, stat=step == "walk_stat")
        return {"seconds": time.perf_counter() - start, "cpu": cpu_seconds() - cpu, "found": found}
    from cnnlab.data import Splitting, dataset, decode, folder

    scan = folder.scan_folder(root) if step == "key" else None
    start, cpu = time.perf_counter(), cpu_seconds()
    if step == "scan":
        found = len(folder.scan_folder(root).files)
    elif step == "key":
        decode.folder_digest(root, scan.files)
        found = len(scan.files)
    else:  # decode, reload: as `cnnlab train --preset fast --image-size SIZE` decodes (the same cache entry)
        found = len(dataset.read_dataset(root, fast_decoding(root, size), Splitting(val_fraction=0), False).train)
    return {"seconds": time.perf_counter() - start, "cpu": cpu_seconds() - cpu, "found": found}


def _status_kb(pid: int, field: str, table: str = "status") -> int:
    try:
        with open(f"/proc/{pid}/{table}") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(field)), 0)
    except OSError:
        return 0


def _tree(pid: int) -> list[int]:
    """pid and its descendants (Linux /proc)."""
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        for task in os.listdir(f"/proc/{p}/task") if os.path.isdir(f"/proc/{p}/task") else []:
            try:
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
            except OSError:
                pass
    return found


def measured(command: list[str], env: dict | None = None) -> tuple[float, dict, int, str]:
    """(wall s, memory, returncode, stdout) of a child process. memory: `peak_mb`, the process's own peak
    RSS (VmHWM, read until it ends), and `tree_mb`, the largest sum of the proportional set sizes (PSS:
    pages shared by forked workers counted once) of it and its children, seen every 50 ms."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, text=True)
        peak = tree = 0
        while proc.poll() is None:
            peak = max(peak, _status_kb(proc.pid, "VmHWM"))
            tree = max(tree, sum(_status_kb(p, "Pss:", "smaps_rollup") for p in _tree(proc.pid)))
            time.sleep(0.05)
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode not in (0, -9):
        sys.exit(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr[-1500:]}")
    return wall, {"peak_mb": peak / 1024, "tree_mb": tree / 1024}, proc.returncode, stdout


def run_child(step: str, root: str, size: int, env: dict) -> dict:
    wall, memory, _, out = measured([sys.executable, __file__, "--child", step, root, str(size)], env)
    return {**json.loads(out.strip().splitlines()[-1]), "wall": wall, **memory}


def first_batch(root: str, size: int, env: dict, out: str) -> dict:
    """`cnnlab train` killed right after its first step (the tests' kill point, tests/hooks): its wall time."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "cnnlab", "train", "--data", root, "--preset", "fast", "--epochs", "1"]
    command += ["--image-size", str(size), "--batch-size", "256", "--out", out, "--no-progress", "--log", "none"]
    hooks = os.pathsep.join([os.path.join(ROOT, "tests", "hooks"), env["PYTHONPATH"]])
    wall, memory, code, _ = measured(command, {**env, "CNNLAB_TEST_KILL_AT": "1:1", "PYTHONPATH": hooks})
    if code != -9:
        sys.exit(f"{root}: the training was to be killed after its first step (exit {code})")
    return {"seconds": wall, **memory}


def keras(python: str, root: str, size: int) -> dict:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [python, "-c", KERAS_STEP, root, str(size), repr(time.time())]
    wall, memory, _, out = measured(command, env)
    found = json.loads(out.strip().splitlines()[-1])
    return {"seconds": found["seconds"], "to_first_batch": found["to_first_batch"], **memory}


def measure(kind: str, n: int, classes: int, args: argparse.Namespace, sources: list[str]) -> dict:
    root, size = build(kind, n, classes, sources), STORED[kind]
    cache = os.path.join(WORK, "cache", f"{kind}-{n}-{classes}")
    env = {**os.environ, "CNNLAB_CACHE": cache, "CNNLAB_CACHE_GB": "1000", "PYTHONPATH": ROOT}
    row = {"kind": kind, "n": n, "classes": classes}
    for step in ("walk", "scan", "walk_stat", "key"):
        row[step] = run_child(step, root, size, env)
        if row[step]["found"] != n:
            sys.exit(f"{root}: {step} found {row[step]['found']} of {n} images")
    if classes == args.classes[0]:  # the decode does not depend on how the files are spread over classes
        shutil.rmtree(cache, ignore_errors=True)
        row["decode"] = run_child("decode", root, size, env)
        row["decode"]["images_per_s_per_core"] = n / row["decode"]["seconds"] / (os.cpu_count() or 1)
        row["reload"] = run_child("reload", root, size, env)
        row["first"] = first_batch(root, size, env, os.path.join(WORK, "run"))
    if args.keras_python:
        row["keras"] = keras(args.keras_python, root, size)
    print(json.dumps(row), flush=True)
    return row


QUICK = ("walk", "scan", "walk_stat", "key", "reload")


def again(path: str, repeat: int) -> None:
    """Measure the quick steps of a saved record's rows again, each the least of `repeat` runs (one run of
    a step that takes a fraction of a second is at the mercy of the machine's other work), and rewrite
    the record with them."""
    with open(path, encoding="utf-8") as fh:
        saved = json.load(fh)
    results = saved["results"]
    for row in results["rows"]:
        root = os.path.join(WORK, f"{row['kind']}-{row['n']}-{row['classes']}")
        cache = os.path.join(WORK, "cache", f"{row['kind']}-{row['n']}-{row['classes']}")
        env = {**os.environ, "CNNLAB_CACHE": cache, "PYTHONPATH": ROOT, "SCALE_REPEAT": str(repeat)}
        for step in (s for s in QUICK if s in row):
            row[step] = run_child(step, root, STORED[row["kind"]], env)
        print(json.dumps(row), flush=True)
    results["exponents"] = exponents(results["rows"])
    results["quick_steps"] = f"least of {repeat} runs each, measured again after the first run: {', '.join(QUICK)}"
    results["tables"] = tables(results["rows"], results["exponents"], results.get("train"))
    print_table(results["rows"], results["exponents"])
    command = f"{saved['command']}; python benchmarks/scale.py --again {path} --repeat {repeat}"
    print(f"record: {write_record('scale', saved['figure'], results, command=command)}")


def train_epoch(n: int, classes: int, sources: list[str]) -> dict:
    """A whole epoch of `cnnlab train` from the photo folder's 64x64 cache (at input 16x16: every stored row
    is read, the model's work kept small): wall time and peak RSS beside the cache's size."""
    root = build("photo", n, classes, sources)
    cache = os.path.join(WORK, "cache", f"photo-{n}-{classes}")
    env = {**os.environ, "CNNLAB_CACHE": cache, "CNNLAB_CACHE_GB": "1000", "PYTHONPATH": ROOT}
    out = os.path.join(WORK, "run-train")
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "cnnlab", "train", "--data", root, "--preset", "fast", "--epochs", "1"]
    command += ["--image-size", "64", "--input-size", "16", "--batch-size", "1024", "--val-fraction", "0.01"]
    command += ["--out", out, "--no-progress", "--log", "none", "--no-tta"]
    wall, memory, _, _ = measured(command, env)
    cache_mb = n * 64 * 64 * 3 / 2**20
    return {"n": n, "seconds": wall, **memory, "cache_mb": cache_mb, "peak_over_cache": memory["peak_mb"] / cache_mb}


STEPS = ("walk", "scan", "walk_stat", "key", "decode", "reload", "first", "keras", "keras_first")


def seconds(row: dict, step: str, key: str = "seconds") -> float | None:
    if step == "keras_first":
        return row["keras"]["to_first_batch"] if "keras" in row and key == "seconds" else None
    return row[step].get(key) if step in row else None


def exponents(rows: list[dict]) -> list[dict]:
    """Per (kind, classes) and step, the growth exponent between each pair of consecutive sizes, of the
    wall time and (where measured) of the CPU time."""
    out = []
    for kind, classes in sorted({(r["kind"], r["classes"]) for r in rows}):
        group = sorted((r for r in rows if (r["kind"], r["classes"]) == (kind, classes)), key=lambda r: r["n"])
        for step in STEPS:
            for a, b in zip(group, group[1:]):
                slope = {}
                for key in ("seconds", "cpu"):
                    if seconds(a, step, key) and seconds(b, step, key):
                        ratio = seconds(b, step, key) / seconds(a, step, key)
                        slope[key] = math.log(ratio) / math.log(b["n"] / a["n"])
                if slope:
                    where = {"kind": kind, "classes": classes, "step": step, "from": a["n"], "to": b["n"]}
                    out.append({**where, "exponent": slope.get("seconds"), "cpu_exponent": slope.get("cpu")})
    return out


def print_table(rows: list[dict], slopes: list[dict]) -> None:
    print(f"\n{'kind':6} {'classes':>7} {'N':>7} " + " ".join(f"{s:>11}" for s in STEPS) + f" {'peak MB':>8}")
    for r in rows:
        cells = [seconds(r, s) for s in STEPS]
        rss = max(v["peak_mb"] for v in r.values() if isinstance(v, dict))
        text = " ".join(f"{c:>10.3f}s" if c is not None else f"{'-':>11}" for c in cells)
        print(f"{r['kind']:6} {r['classes']:>7} {r['n']:>7} {text} {rss:>8.0f}")
    print("\ngrowth exponents (1.0: linear): wall, CPU")
    for s in slopes:
        cpu = "" if s["cpu_exponent"] is None else f"{s['cpu_exponent']:.2f}"
        print(
            f"  {s['kind']:6} {s['classes']:>5} classes {s['step']:>11} {s['from']:>7} -> {s['to']:<7} {s['exponent']:.2f} {cpu}"
        )


def tables(rows: list[dict], slopes: list[dict], train: dict | None) -> dict:
    """The record's tables for the docs: seconds per step and N side by side, the exponents, the epoch."""
    columns = ["kind", "classes", "N", "walk s", "scan s", "scan / walk", "walk+stat s", "key s", "decode s"]
    columns += ["img/s/core", "reload s", "first batch s", "Keras scan s", "Keras first s", "peak MB"]
    out = []
    for r in rows:
        decode = r.get("decode", {})
        cells = [r["kind"], r["classes"], r["n"], *(seconds(r, s) for s in ("walk", "scan"))]
        cells += [seconds(r, "scan") / seconds(r, "walk"), seconds(r, "walk_stat"), seconds(r, "key")]
        cells += [decode.get("seconds"), decode.get("images_per_s_per_core")]
        cells += [seconds(r, s) for s in ("reload", "first", "keras", "keras_first")]
        cells.append(max(v["peak_mb"] for v in r.values() if isinstance(v, dict)))
        out.append(cells)
    spans = sorted({(s["from"], s["to"]) for s in slopes})
    growth = {}
    for s in slopes:
        by = growth.setdefault((s["kind"], s["classes"], s["step"]), {})
        by[(s["from"], s["to"])] = s["exponent"], s["cpu_exponent"]
    made = {
        "seconds per step (wall)": {"columns": columns, "rows": out},
        "growth exponents of wall time and of CPU time (log t / log N; 1.0 is linear)": {
            "columns": [
                "kind",
                "classes",
                "step",
                *(f"{a:,} -> {b:,} {what}" for a, b in spans for what in ("wall", "CPU")),
            ],
            "rows": [[*key, *(v for span in spans for v in by.get(span, (None, None)))] for key, by in growth.items()],
        },
    }
    for table in made.values():  # a step not measured at that size: a dash, not "None"
        table["rows"] = [["-" if cell is None else cell for cell in row] for row in table["rows"]]
    if train:
        made["a training epoch from the largest photo cache"] = {
            "columns": ["N", "seconds", "peak RSS MB", "cache MB", "peak / cache"],
            "rows": [[train["n"], train["seconds"], train["peak_mb"], train["cache_mb"], train["peak_over_cache"]]],
        }
    return made


def retable(path: str) -> None:
    """Rebuild the tables of a record from its rows (after a change to how they are shown)."""
    from cnnlab.files import write_atomic

    with open(path, encoding="utf-8") as fh:
        saved = json.load(fh)
    results = saved["results"]
    results["tables"] = tables(results["rows"], results["exponents"], results.get("train"))
    write_atomic(path, json.dumps(saved, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--kinds", nargs="+", choices=sorted(STORED), default=["cifar", "photo"])
    parser.add_argument("--keras-python", help="the Python of the Keras environment (its scan and first batch)")
    parser.add_argument("--train", action="store_true", help="also a whole epoch from the largest photo cache")
    parser.add_argument(
        "--data", default=os.environ.get("CNNLAB_DATA", os.path.join(ROOT, "..", "shared", "datasets", "cifar10"))
    )
    parser.add_argument("--child", nargs=3, metavar=("STEP", "ROOT", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--retable", metavar="RECORD", help="only rebuild the tables of a saved record")
    parser.add_argument("--again", metavar="RECORD", help="only measure the quick steps of a record again")
    parser.add_argument("--repeat", type=int, default=3, help="with --again: runs of each quick step")
    args = parser.parse_args()
    if args.retable:
        retable(args.retable)
        return
    if args.again:
        again(args.again, args.repeat)
        return
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return
    rows = []
    for kind in args.kinds:
        sources = cifar_sources(args.data) if kind == "cifar" else photo_pool(args.data)
        for classes in args.classes:
            for n in args.sizes:
                rows.append(measure(kind, n, classes, args, sources))
    slopes = exponents(rows)
    print_table(rows, slopes)
    results = {"rows": rows, "exponents": slopes, "cpus": os.cpu_count()}
    if args.train:
        results["train"] = train_epoch(max(args.sizes), args.classes[0], photo_pool(args.data))
        print(f"\ntraining epoch: {json.dumps(results['train'])}")
    results["tables"] = tables(rows, slopes, results.get("train"))
    print(f"record: {write_record('scale', 'how cost grows with the number of images', results)}")


if __name__ == "__main__":
    main()
