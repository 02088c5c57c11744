"""benchmarks/recipe_choices.py: a recipe's variants compared on validation, kept only when they reach the
target sooner in every seed."""

import json
import os
import sys

import pytest
from conftest import make_dataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import presets  # noqa: E402
import recipe_choices  # noqa: E402
from recipe_choices import RunFigures, compare  # noqa: E402


def history(accuracies, times):
    return [{"epoch": e, "val_accuracy": a, "time_s": t} for e, (a, t) in enumerate(zip(accuracies, times), 1)]


def test_time_to_target_is_the_training_time_to_the_first_epoch_that_reaches_it():
    run = RunFigures.of(0, history([0.90, 0.95, 0.93, 0.96], [10.0, 20.0, 30.0, 40.0]), target=0.94)
    assert run.time_to_target_s == 30.0 and run.epochs_to_target == 2
    assert run.train_time_s == 100.0 and run.val_accuracy == 0.96
    never = RunFigures.of(0, history([0.90, 0.93], [10.0, 20.0]), target=0.94)
    assert never.time_to_target_s is None and never.epochs_to_target is None


def test_a_run_without_validation_cannot_be_compared():
    with pytest.raises(ValueError, match="validation split"):
        RunFigures.of(0, [{"epoch": 1, "val_accuracy": None, "time_s": 1.0}], target=0.5)


def runs(times, accuracies=None):
    accuracies = accuracies or [0.95] * len(times)
    return [
        RunFigures(seed, acc, 100.0, t, None if t is None else 8, "fp32")
        for seed, (t, acc) in enumerate(zip(times, accuracies))
    ]


def test_kept_only_when_every_seed_reaches_the_target_sooner_on_average():
    compared = compare(
        {
            "as shipped": runs([30.0, 30.0, 30.0], [0.94, 0.95, 0.96]),
            "faster": runs([20.0, 25.0, 20.0], [0.95, 0.95, 0.97]),
            "slower": runs([40.0, 30.0, 30.0]),
            "misses one": runs([10.0, None, 10.0]),
        }
    )
    assert "kept" not in compared["as shipped"]
    assert compared["faster"]["kept"] and compared["faster"]["why"] == "time to target 0.72x the baseline's"
    assert not compared["slower"]["kept"] and "1.11x" in compared["slower"]["why"]
    assert not compared["misses one"]["kept"] and compared["misses one"]["why"] == "target not reached with seed(s) 1"
    # paired over the seeds: differences +1, 0, +1 points
    difference = compared["faster"]["val_accuracy_difference"]
    assert difference["n"] == 3 and difference["mean"] == pytest.approx(2 / 300)
    assert compared["misses one"]["reached"] == 2


def test_true_and_false_become_the_flag_and_its_negation():
    assert presets.flag("tta=false") == ["--no-tta"]
    assert presets.flag("flip_alternate=True") == ["--flip-alternate"]
    assert presets.flag("label_smoothing=0.2") == ["--label-smoothing", "0.2"]


def test_the_benchmark_trains_each_variant_per_seed_and_records_the_choice(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "ds", 20)
    written = {}

    def write_record(name, figure, results):
        written[name] = json.loads(json.dumps(results))
        return str(tmp_path / f"{name}.json")

    monkeypatch.setattr(recipe_choices, "write_record", write_record)
    tiny = ["threads=1", "batch_size=8", "eval_batch_size=64", "schedule=constant", "lr=0.05", "warmup_epochs=0"]
    argv = ["recipe_choices.py", data, "--preset", "fast", "--seeds", "2", "--target", "0.0", "--runs"]
    argv += [str(tmp_path / "runs"), "--variant", "epochs=1,tta=false"]
    argv += [item for key in tiny for item in ("--set", key)] + ["--set", "epochs=2", "--record", "choices"]
    monkeypatch.setattr(sys, "argv", argv)
    assert recipe_choices.main() == 0
    variants = written["choices"]["variants"]
    assert list(variants) == ["as shipped", "epochs=1,tta=false"]
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(
        f"fast-val_fraction-0.1-{'-'.join(k.replace('=', '-') for k in tiny)}-epochs-2{v}-{seed}"
        for v in ("", "-epochs-1-tta-false")
        for seed in (0, 1)
    )
    variant_run = next(name for name in os.listdir(tmp_path / "runs") if name.endswith("tta-false-1"))
    with open(tmp_path / "runs" / variant_run / "config.json") as fh:
        config = json.load(fh)["config"]
    assert (config["val_fraction"], config["epochs"], config["tta"], config["seed"]) == (0.1, 1, False, 1)
    for entry in variants.values():
        assert [r["seed"] for r in entry["runs"]] == [0, 1]
        assert entry["reached"] == 2  # the target 0 is reached after the first epoch
    assert [r["epochs_to_target"] for r in variants["epochs=1,tta=false"]["runs"]] == [1, 1]
    assert [r["train_time_s"] > 0 for r in variants["as shipped"]["runs"]] == [True, True]
    fields = {"seed", "val_accuracy", "train_time_s", "time_to_target_s", "epochs_to_target", "precision"}
    assert all(set(r) == fields for entry in variants.values() for r in entry["runs"])  # no test figure
