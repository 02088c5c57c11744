"""Bad input gives one clear line on stderr, exit status 2, no traceback and nothing written."""

import json
import os
import subprocess
import sys

import pytest
from conftest import make_folder

from cnnlab.cli import build_parser, main
from cnnlab.config import Config


def run_main(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0]


def test_missing_path_from_a_real_process(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab.cli", "train", "--data", str(tmp_path / "nope"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such folder; check the path (or set CNNLAB_DATA)"
    assert not out.exists()


@pytest.mark.parametrize("case", ["empty_class", "stray_file", "corrupt", "mismatch"])
def test_bad_datasets(tmp_path, capsys, case):
    root = tmp_path / "ds"
    make_folder(root / "train", per_class=4)
    make_folder(root / "test", per_class=2, classes=("a", "b", "x") if case == "mismatch" else ("a", "b", "c"))
    culprit = {
        "empty_class": root / "train" / "d",
        "stray_file": root / "train" / "oops.jpg",
        "corrupt": root / "test" / "b" / "broken.png",
        "mismatch": "only in test: x",
    }[case]
    if case == "empty_class":
        culprit.mkdir()
    elif case in ("stray_file", "corrupt"):
        culprit.write_bytes(b"not an image at all")
    out = tmp_path / "run"
    code, _, err = run_main(capsys, "train", "--data", str(root), "--out", str(out), "--no-progress")
    assert_one_line_error(code, err, str(culprit))
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--epochs", "0"], "'epochs' must be positive"),
        (["--epochs", "-3"], "'epochs' must be positive"),
        (["--batch-size", "two"], "'batch_size': expected int, got 'two'"),
        (["--model", "nope"], "unknown model 'nope'; known models:"),
        (["--batch-size", "4096"], "'batch_size' (4096) is larger than the 54 training images"),
    ],
)
def test_bad_config_values(tiny_dataset, tmp_path, capsys, flags, needle):
    code, _, err = run_main(
        capsys, "train", "--data", tiny_dataset, "--out", str(tmp_path / "r"), "--no-progress", *flags
    )
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "r").exists()


def test_unknown_key_in_config_file(tmp_path, capsys):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"epochs": 3, "learning_rate": 0.1}))
    code, _, err = run_main(capsys, "train", "--config", str(path), "--print-config")
    assert_one_line_error(code, err, "unknown config key(s): learning_rate")


def test_existing_run_dir_is_never_overwritten(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_main(capsys, "train", "--data", tiny_dataset, "--out", str(out))
    assert_one_line_error(code, err, "already holds files")
    assert os.listdir(out) == ["keep.txt"]


def test_every_config_field_is_a_flag_and_print_config_resolves(capsys):
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.dest for a in train._actions}
    assert {f for f in Config.__dataclass_fields__} <= flags
    code, out, _ = run_main(capsys, "train", "--preset", "seed", "--epochs", "30", "--print-config")
    cfg = json.loads(out)
    assert code == 0 and cfg["epochs"] == 30 and cfg["batch_size"] == 50 and cfg["input_size"] == 256


def test_data_info_prints_keras_lines(tiny_dataset, capsys):
    code, out, _ = run_main(capsys, "data", "info", tiny_dataset, "--quiet")
    assert code == 0
    assert out.splitlines()[:3] == [
        "Found 54 images belonging to 3 classes.  (training)",
        "Found 6 images belonging to 3 classes.  (validation)",
        "Found 30 images belonging to 3 classes.  (test)",
    ]
    assert "image size: 16x16x3 (uint8)" in out


def test_train_names_the_split_of_each_found_line(tiny_dataset, tmp_path, capsys):
    # with --subset the three counts can be equal: each line says which split it counts
    flags = ["--epochs", "1", "--batch-size", "8", "--threads", "1"]
    code, out, _ = run_main(capsys, "train", "--data", tiny_dataset, "--out", str(tmp_path / "run"), *flags)
    assert code == 0
    assert out.splitlines()[:3] == [
        "Found 54 images belonging to 3 classes.  (training)",
        "Found 6 images belonging to 3 classes.  (validation)",
        "Found 30 images belonging to 3 classes.  (test)",
    ]


def test_summary_command(capsys):
    code, out, _ = run_main(capsys, "summary", "seed_alexnet")
    assert code == 0 and out.splitlines()[-4] == "Total params: 8,636,810"


def test_evaluate_refuses_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    code, _, err = run_main(capsys, "evaluate", str(tmp_path / "half"))
    assert_one_line_error(code, err, "incomplete")


def test_an_explicit_preset_fast_wins_over_a_sweep_files_preset(tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_text('preset = "seed"\n[grid]\nbatch_size = [100, 200]\nepochs = [20, 30]\n')
    assert main(["sweep", "--sweep-file", str(path), "--dry-run"]) == 0  # the file's preset: constant schedule
    assert capsys.readouterr().out.startswith("epochs shared")
    assert main(["sweep", "--sweep-file", str(path), "--preset", "fast", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("epochs not shared: schedule onecycle")


def test_without_a_preset_train_and_sweep_use_fast(tmp_path, capsys):
    from cnnlab.presets import preset

    assert main(["train", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == preset("fast").resolved().to_dict()
    assert main(["sweep", "--grid", "lr=0.1,0.2", "--dry-run"]) == 0
    assert "2 training(s) per seed (14 epochs)" in capsys.readouterr().out
