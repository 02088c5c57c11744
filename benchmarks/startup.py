"""Start-up cost of cnnlab: wall time (median of 5) of `cnnlab --help`, `cnnlab train --help` and
`python -c "import cnnlab"`, and the heavy third-party modules each one imports (from `-X importtime`).

    python benchmarks/startup.py [--repo PATH] [--runs 5]

`--repo` is the checkout to measure (default: the one holding this script); the commands run in it
with it first on PYTHONPATH, and `cnnlab` is run as `python -c 'from cnnlab.cli import main; ...'`, what the installed
console script does, so any checkout can be measured with one interpreter.

Measured 2026-11-30 (2 shared CPU cores, load ~10; Python 3.11, torch 2.13 CPU): `cnnlab --help` 8.8 s
before the lazy imports (torch, matplotlib, numpy loaded), 0.34 s after (none); `import cnnlab` 9.3 s -> 0.19 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

# Third-party packages worth naming when a command imports them (seconds of import each, or a backend).
HEAVY = (
    "torch",
    "matplotlib",
    "numpy",
    "scipy",
    "optuna",
    "PIL",
    "safetensors",
    "tqdm",
    "onnx",
    "onnxruntime",
    "mlflow",
    "tensorboard",
    "psycopg",
    "sqlalchemy",
    "timm",
    "torchvision",
)

CLI = "import sys; from cnnlab.cli import main; sys.argv[0] = 'cnnlab'; sys.exit(main())"
COMMANDS = {
    "cnnlab --help": ["-c", CLI, "--help"],
    "cnnlab train --help": ["-c", CLI, "train", "--help"],
    'python -c "import cnnlab"': ["-c", "import cnnlab"],
}


def environment(repo: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([repo] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def wall_times(args: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, *args],
            env=env,
            cwd=env["PYTHONPATH"].split(os.pathsep)[0],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        times.append(time.perf_counter() - start)
    return times


def heavy_imports(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """{top-level heavy package: cumulative import time in seconds} from one `-X importtime` run."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        env=env,
        cwd=env["PYTHONPATH"].split(os.pathsep)[0],
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if not cumulative.strip().isdigit():
            continue  # the header line
        module = name.strip()
        if module in HEAVY:  # the package itself, not its submodules: its cumulative time holds theirs
            found[module] = max(found.get(module, 0.0), int(cumulative) / 1e6)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    env = environment(os.path.abspath(opts.repo))
    print(f"checkout {opts.repo}; python {sys.version.split()[0]}; median of {opts.runs} runs")
    for label, args in COMMANDS.items():
        median = statistics.median(wall_times(args, env, opts.runs))
        heavy = heavy_imports(args, env)
        named = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(heavy.items(), key=lambda kv: -kv[1])) or "none"
        print(f"{label:28s} {median:6.2f} s   heavy imports: {named}")


if __name__ == "__main__":
    main()
