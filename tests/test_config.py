import pytest

from cnnlab.config import Config, parse_config
from cnnlab.errors import ConfigError
from cnnlab.presets import PRESETS, preset


def test_seed_preset_is_the_study():
    cfg = preset("seed")
    assert (cfg.model, cfg.input_size, cfg.interpolation, cfg.scaling) == ("seed_alexnet", 256, "nearest", "rescale")
    assert (cfg.optimizer, cfg.lr, cfg.adam_eps, cfg.schedule) == ("adam", 1e-3, 1e-7, "constant")
    assert (cfg.batch_size, cfg.epochs, cfg.val_fraction, cfg.split) == (50, 20, 0.1, "keras")
    assert not (cfg.flip or cfg.translate or cfg.cutout or cfg.tta or cfg.label_smoothing)


def test_fast_is_the_default():
    assert preset("fast") == Config() and set(PRESETS) == {"fast", "seed", "finetune", "fast94"}


def test_round_trip_through_dict():
    cfg = preset("seed", epochs=3)
    assert parse_config(cfg.to_dict()) == cfg
    assert cfg.replace(batch_size=100).batch_size == 100


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"epochs": 0}, "'epochs' must be positive"),
        ({"epochs": 2.5}, "'epochs': expected int"),
        ({"lr": "fast"}, "'lr': expected float"),
        ({"optimizer": "rmsprop"}, "'optimizer': 'rmsprop' is not one of sgd, adam"),
        ({"val_fraction": 1.0}, "'val_fraction' must be in [0, 1)"),
        ({"flip": "maybe"}, "'flip': expected bool"),
        ({"colour": 1}, "unknown config key(s): colour"),
        ({"device": "tpu"}, "'device' must be auto"),
        ({"brightness": -0.1}, "'brightness' must be >= 0"),
        ({"contrast": 1.0}, "'contrast' must be in [0, 1)"),
    ],
)
def test_bad_values_name_the_key(values, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(values)
    assert needle in str(err.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="known presets: fast, seed"):
        preset("slow")


def test_a_runs_config_json_is_a_config_file(tmp_path):
    import json

    from cnnlab.config import load_config_file

    cfg = preset("seed", epochs=3)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": cfg.to_dict(), "seed": 0, "data": {}, "environment": {}}))
    assert load_config_file(str(path)) == cfg


@pytest.mark.parametrize(
    "key,value", [("weight_decay", "nan"), ("lr", "inf"), ("momentum", float("-inf")), ("warmup_epochs", float("nan"))]
)
def test_non_finite_numbers_are_refused_by_key(key, value):
    with pytest.raises(ConfigError, match=f"config key '{key}' must be a finite number"):
        parse_config({key: value})


def test_fast_uses_airbenchs_alternating_flip_and_translated_tta_while_seed_and_finetune_do_not():
    fast = preset("fast")
    assert (fast.flip, fast.flip_alternate, fast.tta, fast.tta_translate) == (True, True, True, 1)
    seed = preset("seed")  # the study: no augmentation, no TTA
    assert (seed.flip, seed.flip_alternate, seed.tta, seed.tta_translate) == (False, False, False, 0)
    finetune = preset("finetune")  # random-resized crops + a random flip; flip TTA only
    assert (finetune.flip, finetune.flip_alternate, finetune.tta, finetune.tta_translate) == (True, False, True, 0)


def test_only_fast94_jitters_brightness_and_contrast():
    assert (preset("fast94").brightness, preset("fast94").contrast) == (0.14, 0.13)
    for name in ("fast", "seed", "finetune"):
        assert (preset(name).brightness, preset(name).contrast) == (0.0, 0.0)
