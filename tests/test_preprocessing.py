"""A run's preprocessing record: saved to config.json with the same keys as before, read back by old and new runs."""

import json

import torch

from cnnlab.data.preprocess import Preprocess, Preprocessing, input_hw

SAVED = {
    "mean": [0.49, 0.48, 0.45],
    "std": [0.25, 0.24, 0.26],
    "image_size": [32, 40],
    "input_size": [64, 80],
    "interpolation": "nearest",
    "resize": "crop",
    "exif": True,
}


def test_the_record_round_trips_through_config_json_unchanged():
    prep = Preprocessing.from_dict(json.loads(json.dumps(SAVED)))
    assert prep.image_size == (32, 40) and prep.input_size == (64, 80) and prep.resize == "crop" and prep.exif
    assert json.dumps(prep.to_dict()) == json.dumps(SAVED)  # the same keys, in the same order, the same values
    assert input_hw(prep) == input_hw(SAVED) == (64, 80)


def test_a_run_saved_before_resize_and_exif_existed_reads_as_squashed_without_exif():
    old = {k: v for k, v in SAVED.items() if k not in ("resize", "exif")} | {"input_size": 64}
    prep = Preprocessing.from_dict(old)
    assert (prep.resize, prep.exif, prep.input_size) == ("squash", False, (64, 64))


def test_the_module_applies_the_record():
    prep = Preprocessing([0.5] * 3, [0.25] * 3, (2, 2), (4, 4))
    images = torch.tensor([[[[0, 255, 51]] * 2] * 2], dtype=torch.uint8)  # (1, 2, 2, 3)
    inputs = Preprocess(prep)(images)
    assert inputs.shape == (1, 3, 4, 4)
    expected = (torch.tensor([0, 255, 51]) / 255 - 0.5) / 0.25
    assert torch.allclose(inputs[0, :, 3, 3], expected)
