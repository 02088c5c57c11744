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
