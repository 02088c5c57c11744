"""Several processes, one training: `torchrun -m cnnlab train` with DistributedDataParallel (gloo on CPU,
2 processes). A few steps of 2 processes leave the weights of 1 process to float32 rounding (same global
batches, same augmentation, SyncBatchNorm); SIGKILL of every process at a chosen step then --resume ends
where the uninterrupted run ends; rank 1 writes nothing into the run directory. Sweep workers on distinct
devices (--workers 2 --devices)."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import SWEEP_FLAGS, kill_env, make_dataset
from safetensors.torch import load_file

from cnnlab.cli import main
from cnnlab.errors import ConfigError
from cnnlab.runs import load_run
from cnnlab.studies import open_study

# 162 training images (60 a class less 10% validation): 20 global batches of 8 an epoch, 4 images per rank.
ARGS = [
    "--epochs",
    "3",
    "--batch-size",
    "8",
    "--eval-batch-size",
    "64",
    "--threads",
    "1",
    "--seed",
    "0",
    "--no-progress",
    "--cutout",
    "4",
    "--lr",
    "0.05",
    "--sync-bn",
    "--no-flip-alternate",
    "--device",
    "cpu",
]  # gloo on the CPU wherever the suite runs (with a GPU, auto would choose NCCL)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

# Installed into each rank's interpreter (sitecustomize on PYTHONPATH): an audit hook that logs every write,
# rename, removal or folder creation under the run directory to a file per rank, outside it.
AUDIT = textwrap.dedent("""
    import os, sys
    RUN, LOG = os.environ.get("AUDIT_RUN_DIR"), os.environ.get("AUDIT_LOG")
    if RUN and LOG and "RANK" in os.environ:
        RUN, LOG = os.path.realpath(RUN), f"{LOG}.rank{os.environ['RANK']}"
        WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
        CHANGES = ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate", "shutil.rmtree", "os.link",
                   "os.symlink", "os.chmod", "os.utime")

        def hook(event, args):
            if event == "open":
                path, mode, flags = args
                if not ((mode is not None and set(str(mode)) & set("wax+")) or (mode is None and flags & WRITES)):
                    return
                paths = [path]
            elif event in CHANGES:
                paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            else:
                return
            for path in paths:
                if isinstance(path, int):
                    continue
                real = os.path.realpath(os.fsdecode(path))
                if real == RUN or real.startswith(RUN + os.sep):
                    with open(LOG, "a") as fh:
                        fh.write(f"{event} {real}\\n")

        sys.addaudithook(hook)
""")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("dist") / "ds", 60, test_per_class=40)


@pytest.fixture(scope="module")
def one_process(dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("one") / "run")  # one epoch: its files are those of any length
    assert main(["train", "--data", dataset, "--out", out, *ARGS, "--epochs", "1"]) == 0
    return out


def torchrun(args: list[str], env: dict | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [*TORCHRUN, "-m", "cnnlab", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **popen,
    )


@pytest.fixture(scope="module")
def two_processes(dataset, tmp_path_factory):
    """The 2-process run, every write of each rank under its run directory logged (AUDIT)."""
    root = tmp_path_factory.mktemp("two")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(AUDIT)
    out = str(root / "run")
    env = {
        "PYTHONPATH": os.pathsep.join([str(root / "site"), os.environ.get("PYTHONPATH", "")]),
        "AUDIT_RUN_DIR": out,
        "AUDIT_LOG": str(root / "writes"),
    }
    proc = torchrun(["--data", dataset, "--out", out, *ARGS], env)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    logs = {
        rank: (root / f"writes.rank{rank}").read_text() if (root / f"writes.rank{rank}").exists() else ""
        for rank in (0, 1)
    }
    return out, stdout, logs


def strip_times(history):
    return [{k: v for k, v in r.items() if "time" not in k} for r in history]


def test_two_processes_run_as_one(one_process, two_processes):
    two, stdout, _ = two_processes
    a, b = load_run(one_process), load_run(two)
    assert b["config"]["sync_bn"] and b["data"]["world_size"] == 2 and a["data"]["world_size"] == 1
    assert [r["epoch"] for r in b["history"]] == [1, 2, 3] and len(b["metrics"]["test_predictions"]) == 120
    # progress and results printed once, by rank 0
    assert stdout.count("run saved in") == 1 and stdout.count("test accuracy") == 1


# Run by torchrun: a few steps (2 epochs of 4 global batches of 16) of `train` in one process (before the
# process group exists), then the same in 2 processes, each on its shard of every global batch.
STEPS = textwrap.dedent("""
    import sys
    import numpy as np, torch, torch.nn as nn
    from cnnlab import distributed
    from cnnlab.presets import preset
    from cnnlab.data import Augmentation, DeviceLoader, Sampling
    from cnnlab.training import train

    cpu, (out, *cases) = torch.device("cpu"), sys.argv[1:]
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, 64)

    def run(case, shard):
        flip_alternate, seed, sync_bn = case.split(",")
        torch.manual_seed(int(seed))
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
        augment = Augmentation(flip=True, flip_alternate=flip_alternate == "1", translate=1, cutout=2)
        sampling = Sampling(shuffle=True, drop_last=True, seed=int(seed), shard=shard)
        loader = DeviceLoader(images, labels, 16, cpu, augment=augment, sampling=sampling)
        cfg = preset("fast", epochs=2, batch_size=16, lr=0.05, threads=1, progress=False, seed=int(seed),
                     sync_bn=sync_bn == "1", flip_alternate=flip_alternate == "1")
        return train(model, loader, None, cfg, ["a", "b", "c"]), model.state_dict()

    one = {case: run(case, (0, 1)) for case in cases}
    distributed.setup(cpu)
    two = {case: run(case, (distributed.rank(), 2)) for case in cases}
    if distributed.is_main():
        torch.save({"one": one, "two": two}, out)
    distributed.shutdown()
""")


def test_a_few_steps_of_two_processes_equal_one_to_float32_rounding(tmp_path):
    # the same global batches, augmentation (the default alternating flip and plain flip) and BatchNorm
    # statistics (sync-BN), summed in another order: the weights agree to float32's tolerance for any
    # seed; BatchNorm statistics per rank (no sync-BN) are a real difference, and fail it
    (tmp_path / "steps.py").write_text(STEPS)
    cases = [f"{flip_alternate},{seed},1" for flip_alternate in (0, 1) for seed in (0, 1, 2)] + ["1,0,0"]
    proc = subprocess.run(
        [*TORCHRUN, str(tmp_path / "steps.py"), str(tmp_path / "out.pt"), *cases],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    results = torch.load(tmp_path / "out.pt", weights_only=False)
    for case in cases:
        (history_one, weights_one), (history_two, weights_two) = results["one"][case], results["two"][case]
        same = all(
            torch.allclose(weights_one[k].double(), weights_two[k].double(), rtol=1.3e-6, atol=1e-5)
            for k in weights_one
        )  # torch.testing's float32 tolerance
        assert same == case.endswith(",1"), case
        if same:
            for one, two in zip(history_one, history_two):
                assert one["loss"] == pytest.approx(two["loss"], abs=1e-6), case
                assert abs(one["accuracy"] - two["accuracy"]) <= 1 / 64, case  # one image of 64 at most


def test_rank_1_writes_nothing_into_the_run_dir(one_process, two_processes):
    two, _, logs = two_processes
    assert "config.json" in logs[0] and "model.safetensors" in logs[0]  # the audit sees rank 0's writes
    assert logs[1] == ""

    def names(folder):
        return sorted("events.out.tfevents" if n.startswith("events.out.tfevents") else n for n in os.listdir(folder))

    assert names(two) == names(one_process)


def test_batch_not_divisible_by_the_processes_is_one_line(dataset, tmp_path, monkeypatch, capsys):
    # checked before any process group is set up: as rank 0 of 3, alone
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--data", dataset, "--out", str(tmp_path / "r"), *ARGS]) == 2
    err = capsys.readouterr().err
    assert "config key 'batch_size' (8) is not a multiple of the 3 processes" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "r")


def test_sigkill_of_every_process_then_resume(dataset, two_processes, tmp_path):
    out = str(tmp_path / "run")
    proc = torchrun(["--data", dataset, "--out", out, *ARGS], kill_env("2:5"))  # every rank, mid-epoch
    _, err = proc.communicate(timeout=300)
    # each rank SIGKILLs itself after step 5; a rank whose peer went first may instead abort inside the
    # collective it was waiting in (SIGABRT, exit code -6): either way the run stopped at the kill point
    assert proc.returncode != 0 and re.search(r"SIGKILL|exitcode: -(6|9)\b", err), err
    assert not os.path.exists(os.path.join(out, "COMPLETE"))
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert (state["epoch"], state["step"], len(state["rank_rng"])) == (2, 0, 2)
    resumed = torchrun(["--resume", out])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    reference = two_processes[0]
    assert strip_times(load_run(out)["history"]) == strip_times(load_run(reference)["history"])
    wa, wb = load_file(os.path.join(out, "model.safetensors")), load_file(os.path.join(reference, "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert load_run(out)["metrics"]["test"] == load_run(reference)["metrics"]["test"]


def test_worker_devices():
    from cnnlab.sweep import worker_devices

    assert worker_devices(3, None, cuda_count=4) == ["cuda:0", "cuda:1", "cuda:2"]
    assert worker_devices(3, None, cuda_count=2) == [None, None, None]  # fewer GPUs than workers: the config's
    assert worker_devices(3, "0,1", cuda_count=2) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices(2, "cpu:0, cuda:3", cuda_count=0) == ["cpu:0", "cuda:3"]
    with pytest.raises(ConfigError, match="--devices"):
        worker_devices(2, "gpu7", cuda_count=0)


def test_sweep_workers_on_distinct_devices(tmp_path):
    data = make_dataset(tmp_path / "ds", 20)
    out = str(tmp_path / "sweep")
    code = main(
        [
            "sweep",
            "--data",
            data,
            "--out",
            out,
            "--grid",
            "lr=0.05,0.1,0.2",
            "--seeds",
            "2",
            "--epochs",
            "2",
            *SWEEP_FLAGS,
            "--workers",
            "2",
            "--devices",
            "cpu:0,cpu:1",
        ]
    )
    assert code == 0
    trials = [t for t in open_study(out).get_trials() if t.state.name == "COMPLETE"]
    assert len(trials) == 6
    by_worker: dict[str, set] = {}
    for trial in trials:
        with open(os.path.join(out, "runs", trial.user_attrs["run"], "config.json")) as fh:
            saved = json.load(fh)
        assert saved["config"]["device"] == saved["data"]["device"]
        by_worker.setdefault(trial.user_attrs["worker"], set()).add(saved["config"]["device"])
    assert len(by_worker) == 2, "one worker took every trial"
    assert sorted(d for devices in by_worker.values() for d in devices) == ["cpu:0", "cpu:1"]


def test_sigterm_to_one_rank_stops_every_rank_and_rank_0_checkpoints(dataset, tmp_path):
    # --logger: cnnlab's --log under a name torchrun does not take for its own --log-dir/--logs-specs
    out = str(tmp_path / "run")
    proc = torchrun(
        ["--data", dataset, "--out", out, *ARGS, "--logger", "none"], kill_env("1:5:TERM:1")
    )  # rank 1 alone, during epoch 1's step 5
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    # one message, from rank 0, naming where it stopped: the ranks agree on a stop every AGREE_EVERY (10) steps,
    # so at step 10; the state of that point saved
    assert err.count("stopped: SIGTERM") == 1 and "checkpoint saved; resume with: torchrun" in err, err
    assert "SIGTERM at epoch 1, step 10; checkpoint saved" in err, err
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert len(state["rank_rng"]) == 2 and not os.path.exists(os.path.join(out, "COMPLETE"))
    assert (state["epoch"], state["step"], state["sums"]["seen"]) == (1, 10, 8 * 10)  # both ranks' images
