"""Adaptation to the training set's size leaves a recipe alone at the size it was designed for."""

from cnnlab.adaptation import adapt_to_dataset
from cnnlab.presets import preset


def test_each_preset_runs_as_written_on_cifar10():
    # CIFAR-10: 45,000 training images with the 10% validation split, 50,000 without (fast94)
    for name, n_train in (("fast", 45_000), ("fast94", 50_000), ("fast", 50_000), ("finetune", 45_000)):
        cfg = preset(name)
        adapted, notes = adapt_to_dataset(cfg, n_train)
        assert adapted == cfg and notes == [], (name, notes)


def test_a_small_training_set_still_gets_more_steps():
    for name in ("fast", "fast94"):
        cfg = preset(name)
        adapted, notes = adapt_to_dataset(cfg, 1_300)
        assert adapted.batch_size < cfg.batch_size and len(notes) == 1
        steps = (1_300 // adapted.batch_size) * adapted.epochs
        design = cfg.epochs * (45_000 // cfg.batch_size)  # the recipe's steps at the size it was made for
        assert steps >= min(600, design) and adapted.epochs > cfg.epochs, (name, steps)


def test_images_smaller_than_the_model_accepts_are_upscaled_unless_input_size_is_given(tmp_path, capsys):
    import json

    from conftest import make_folder

    from cnnlab.cli import main

    root = make_folder(tmp_path / "ds", per_class=4, size=8)  # 8x8: fastnet takes 9x9 and larger
    tiny = [
        "--data",
        root,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--val-fraction",
        "0",
        "--threads",
        "1",
        "--log",
        "none",
    ]
    assert main(["train", *tiny, "--out", str(tmp_path / "auto")]) == 0
    saved = json.load(open(tmp_path / "auto" / "config.json"))
    line = "images of 8x8 are smaller than model 'fastnet' accepts: input_size 0 -> 16 (each pixel repeated 2x2)"
    assert saved["config"]["input_size"] == 16 and saved["data"]["preprocessing"]["input_size"] == [16, 16]
    assert line in capsys.readouterr().out and any(line in note for note in saved["data"]["notes"])
    assert main(["train", *tiny, "--input-size", "12", "--out", str(tmp_path / "given")]) == 0
    saved = json.load(open(tmp_path / "given" / "config.json"))
    assert saved["config"]["input_size"] == 12 and "smaller than model" not in capsys.readouterr().out
