"""Fine-tuning: pretrained weights from a local file or cache, --init-from a run, the finetune preset
(AdamW, warm-up + cosine, a lower backbone lr), and timm models by name (when timm is installed)."""

import json
import math
import os

import pytest
import torch
from conftest import make_dataset, make_folder
from safetensors.torch import load_file, save_file

from cnnlab import runs
from cnnlab.cli import main
from cnnlab.config import Config
from cnnlab.errors import ConfigError
from cnnlab.models import create_model, create_pretrained, head_parameter_names, input_config
from cnnlab.optim import build_optimizer, lr_factor
from cnnlab.pipeline import prepare
from cnnlab.presets import preset

TINY = [
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--eval-batch-size",
    "64",
    "--threads",
    "1",
    "--no-progress",
    "--log",
    "none",
]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def backbone(state: dict, head: set[str]) -> dict:
    return {k: v for k, v in state.items() if k not in head}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


# --- schedule and optimizer ---


def test_cosine_schedule_rises_linearly_then_follows_half_a_cosine_to_zero():
    total, warmup = 10, 2
    values = [lr_factor(step, total, warmup, "cosine") for step in range(total + 1)]
    assert values[0] == 0.5 and values[1] == 1.0  # linear warm-up over 2 steps
    assert values[2] == 1.0  # the peak, where the cosine starts
    assert values[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)), abs=1e-15)
    assert values[6] == pytest.approx(0.5, abs=1e-15)  # half way through the decay
    assert values[10] == pytest.approx(0.0, abs=1e-15)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))  # never rises after the warm-up
    assert lr_factor(0, 10, 0, "cosine") == 1.0  # no warm-up: starts at the peak


def test_adamw_gives_the_head_the_full_lr_and_the_backbone_a_fraction():
    model = create_model("fastnet", num_classes=3)
    cfg = Config(optimizer="adamw", lr=2e-3, backbone_lr_scale=0.1, weight_decay=0.05, momentum=0.9)
    optimizer = build_optimizer(model, cfg)
    assert type(optimizer) is torch.optim.AdamW
    head, body = optimizer.param_groups
    assert [p for p in head["params"]] == [model.head.weight]  # fastnet's classifier: head (no bias)
    trainable = [p for n, p in model.named_parameters() if p.requires_grad and n != "head.weight"]
    assert body["params"] == trainable and len(trainable) > 10
    assert head["lr"] == 2e-3 and body["lr"] == pytest.approx(2e-4, rel=1e-15)
    assert head["weight_decay"] == body["weight_decay"] == 0.05 and head["betas"] == (0.9, 0.999)
    # the scheduler scales both groups by the same factor
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, 10, 2, "cosine"))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 1e-4], rel=1e-12)
    del scheduler


def test_one_lr_for_all_parameters_keeps_one_group():
    model = create_model("fastnet", num_classes=3)
    optimizer = build_optimizer(model, Config())
    assert len(optimizer.param_groups) == 1 and type(optimizer) is torch.optim.SGD


def test_finetune_preset():
    cfg = preset("finetune")
    assert (cfg.optimizer, cfg.schedule, cfg.label_smoothing, cfg.weight_decay) == ("adamw", "cosine", 0.1, 0.05)
    assert cfg.backbone_lr_scale == 0.1 and cfg.flip and 0 < cfg.rrc_scale_min < 1 and cfg.warmup_epochs > 0
    assert cfg.lr < preset("fast").lr and cfg.scaling == "model"


@pytest.mark.parametrize("key,value", [("backbone_lr_scale", -0.1), ("rrc_scale_min", 1.5), ("rrc_scale_min", -0.1)])
def test_finetune_fields_are_range_checked(key, value):
    with pytest.raises(ConfigError, match=repr(key)):
        Config().replace(**{key: value})


# --- pretrained weights from a local file (cnnlab's own models) ---


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_pretrained_file_gives_the_backbone_and_a_new_head(tmp_path, suffix):
    torch.manual_seed(1)
    source = create_model("fastnet", num_classes=10).state_dict()
    path = str(tmp_path / f"weights.{suffix}")
    if suffix == "safetensors":
        save_file({k: v.contiguous() for k, v in source.items()}, path)
    else:
        torch.save({"state_dict": source}, path)  # a training checkpoint's wrapper is unwrapped
    torch.manual_seed(2)
    fresh_head = create_model("fastnet", num_classes=3).head.weight
    torch.manual_seed(2)
    model = create_pretrained("fastnet", 3, path)
    head = set(head_parameter_names(model))
    assert head == {"head.weight"}
    assert_same(backbone(model.state_dict(), head), backbone(source, head))
    assert model.head.weight.shape == (3, 128) and torch.equal(model.head.weight, fresh_head)


def test_pretrained_through_the_pipeline_keeps_the_loaded_whitening(tmp_path):
    data = make_dataset(tmp_path / "ds", 10, 2)
    torch.manual_seed(1)
    source = {k: v.contiguous() for k, v in create_model("fastnet", num_classes=5).state_dict().items()}
    path = str(tmp_path / "w.safetensors")
    save_file(source, path)
    ready = prepare(Config(data=data, pretrained=path, batch_size=8, progress=False, threads=1, log="none"))
    assert_same(backbone(ready.model.state_dict(), {"head.weight"}), backbone(source, {"head.weight"}))
    assert ready.model.head.weight.shape == (3, 128)


def test_missing_pretrained_file_is_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", 10, 2)
    missing = str(tmp_path / "nowhere.safetensors")
    assert main(["train", "--data", data, "--out", str(tmp_path / "r"), "--pretrained", missing, *TINY]) == 2
    err = one_line_error(capsys)
    assert missing in err and "not found" in err
    assert not os.path.exists(tmp_path / "r")


def test_pretrained_file_of_another_model_is_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", 10, 2)
    path = str(tmp_path / "alexnet.safetensors")
    save_file({k: v.contiguous() for k, v in create_model("seed_alexnet").state_dict().items()}, path)
    assert main(["train", "--data", data, "--out", str(tmp_path / "r"), "--pretrained", path, *TINY]) == 2
    err = one_line_error(capsys)
    assert path in err and "fastnet" in err


def test_pretrained_file_that_is_not_weights_is_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", 10, 2)
    path = tmp_path / "notes.bin"
    path.write_text("not weights")
    assert main(["train", "--data", data, "--out", str(tmp_path / "r"), "--pretrained", str(path), *TINY]) == 2
    assert str(path) in one_line_error(capsys)


def test_hub_weights_for_a_cnnlab_model_is_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", 10, 2)
    assert main(["train", "--data", data, "--out", str(tmp_path / "r"), "--pretrained", "hub", *TINY]) == 2
    err = one_line_error(capsys)
    assert "fastnet" in err and "--init-from" in err


# --- --init-from a cnnlab run ---


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished 1-epoch fastnet run on 3 classes."""
    root = tmp_path_factory.mktemp("source")
    data = make_dataset(root / "ds", 10, 2)
    out = str(root / "run")
    assert main(["train", "--data", data, "--out", out, *TINY]) == 0
    return out


def test_init_from_a_run_with_other_classes_gets_a_new_head(tmp_path, source_run):
    data = str(tmp_path / "four")
    make_folder(os.path.join(data, "train"), classes=("w", "x", "y", "z"), per_class=10)
    make_folder(os.path.join(data, "test"), classes=("w", "x", "y", "z"), per_class=2, seed=1)
    saved = load_file(os.path.join(source_run, runs.WEIGHTS))
    ready = prepare(Config(data=data, init_from=source_run, batch_size=8, progress=False, threads=1, log="none"))
    assert_same(backbone(ready.model.state_dict(), {"head.weight"}), backbone(saved, {"head.weight"}))
    assert ready.model.head.weight.shape == (4, 128)
    # and the whole run goes through, saving where it started from
    out = str(tmp_path / "run")
    assert main(["train", "--data", data, "--out", out, "--init-from", source_run, *TINY]) == 0
    assert runs.read_json(os.path.join(out, runs.CONFIG))["config"]["init_from"] == source_run


def test_model_scaling_normalises_as_the_starting_weights_were_trained(tmp_path, source_run):
    data = make_folder(tmp_path / "other", per_class=10, seed=7)  # other images: other statistics
    saved = runs.read_json(os.path.join(source_run, runs.CONFIG))["data"]["preprocessing"]
    common = dict(data=data, batch_size=8, progress=False, threads=1, log="none")
    ready = prepare(Config(init_from=source_run, scaling="model", **common))
    assert (ready.prep.mean, ready.prep.std) == (saved["mean"], saved["std"])
    own = prepare(Config(scaling="model", **common)).prep  # fastnet from scratch: the dataset's statistics
    data_stats = prepare(Config(scaling="normalize", **common)).prep
    assert (own.mean, own.std) == (data_stats.mean, data_stats.std) and own.mean != saved["mean"]


def test_init_from_a_run_with_the_same_classes_keeps_its_head(tmp_path, source_run):
    data = runs.read_json(os.path.join(source_run, runs.CONFIG))["config"]["data"]
    saved = load_file(os.path.join(source_run, runs.WEIGHTS))
    ready = prepare(Config(data=data, init_from=source_run, batch_size=8, progress=False, threads=1, log="none"))
    assert_same(ready.model.state_dict(), saved)


def test_init_from_a_run_of_another_model_is_one_line(tmp_path, source_run, capsys):
    data = make_dataset(tmp_path / "ds", 10, 2)
    out = str(tmp_path / "r")
    code = main(["train", "--data", data, "--out", out, "--model", "fastnet_wide", "--init-from", source_run, *TINY])
    assert code == 2
    err = one_line_error(capsys)
    assert source_run in err and "'fastnet'" in err and "'fastnet_wide'" in err
    assert not os.path.exists(out)


def test_init_from_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", 10, 2)
    assert main(["train", "--data", data, "--out", str(tmp_path / "r"), "--init-from", str(tmp_path), *TINY]) == 2
    assert str(tmp_path) in one_line_error(capsys)


def test_init_from_and_pretrained_together_is_one_line(tmp_path, source_run, capsys):
    data = make_dataset(tmp_path / "ds", 10, 2)
    assert (
        main(
            [
                "train",
                "--data",
                data,
                "--out",
                str(tmp_path / "r"),
                "--init-from",
                source_run,
                "--pretrained",
                "hub",
                *TINY,
            ]
        )
        == 2
    )
    err = one_line_error(capsys)
    assert "init_from" in err and "pretrained" in err


# --- timm models ---


def test_timm_model_without_timm_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match=r"pip install timm"):
        create_model("timm/resnet18", num_classes=3)
    data = make_dataset(tmp_path / "ds", 10, 2)
    assert main(["train", "--data", data, "--out", str(tmp_path / "r"), "--model", "timm/resnet18", *TINY]) == 2
    assert "pip install timm" in one_line_error(capsys)


def test_own_models_have_their_input_size_and_no_fixed_normalisation():
    assert input_config("fastnet") == {
        "input_size": (32, 32),
        "mean": None,
        "std": None,
        "interpolation": None,
        "crop_pct": None,
    }
    assert input_config("seed_alexnet")["input_size"] == (256, 256)


@pytest.fixture
def timm():
    return pytest.importorskip("timm")


def test_timm_model_by_name(timm):
    model = create_model("timm/resnet10t", num_classes=3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert set(head_parameter_names(model)) == {"fc.weight", "fc.bias"}
    cfg = timm.get_pretrained_cfg("resnet10t")
    assert input_config("timm/resnet10t") == {
        "input_size": tuple(cfg.input_size[1:]),
        "mean": tuple(cfg.mean),
        "std": tuple(cfg.std),
        "interpolation": cfg.interpolation,
        "crop_pct": cfg.crop_pct,
    }
    with pytest.raises(ConfigError, match="unknown timm model 'resnet9000'"):
        create_model("timm/resnet9000")


def test_timm_pretrained_file_gives_the_backbone_and_a_new_head(timm, tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("resnet10t", num_classes=1000).state_dict()
    path = str(tmp_path / "resnet10t.safetensors")
    save_file({k: v.contiguous() for k, v in source.items()}, path)
    model = create_pretrained("timm/resnet10t", 3, path)
    head = {"fc.weight", "fc.bias"}
    assert_same(backbone(model.state_dict(), head), backbone(source, head))
    assert model.fc.weight.shape == (3, 512)


def test_timm_model_scaling_is_its_pretrained_normalisation(timm, tmp_path):
    data = make_dataset(tmp_path / "ds", 10, 2)
    ready = prepare(
        Config(
            data=data,
            model="timm/resnet10t",
            scaling="model",
            input_size=32,
            batch_size=8,
            progress=False,
            threads=1,
            log="none",
        )
    )
    cfg = timm.get_pretrained_cfg("resnet10t")
    assert (ready.prep.mean, ready.prep.std) == (list(cfg.mean), list(cfg.std))


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch.hub caches (huggingface_hub reads its cache folder at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf" / "hub"


def test_timm_hub_weights_not_on_disk_is_one_line(timm, empty_caches):
    with pytest.raises(ConfigError) as info:
        create_pretrained("timm/resnet10t", 3, "hub")
    message = str(info.value)
    assert "\n" not in message and "timm/resnet10t" in message and "--pretrained PATH" in message


def test_timm_hub_weights_come_from_the_local_cache(timm, empty_caches):
    # the layout huggingface_hub keeps: models--ORG--NAME/{refs/main, snapshots/REVISION/FILE}
    hub_id = timm.get_pretrained_cfg("resnet10t").hf_hub_id
    repo = empty_caches / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.manual_seed(1)
    source = timm.create_model("resnet10t", num_classes=1000).state_dict()
    save_file(
        {k: v.contiguous() for k, v in source.items()}, str(repo / "snapshots" / ("0" * 40) / "model.safetensors")
    )
    model = create_pretrained("timm/resnet10t", 3, "hub")
    head = {"fc.weight", "fc.bias"}
    assert_same(backbone(model.state_dict(), head), backbone(source, head))


def test_timm_model_trains_and_predicts_end_to_end(timm, tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", 10, 2)
    out = str(tmp_path / "run")
    assert (
        main(
            [
                "train",
                "--preset",
                "finetune",
                "--data",
                data,
                "--out",
                out,
                "--model",
                "timm/resnet10t",
                "--input-size",
                "32",
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    image = os.path.join(data, "test", "a", "img_000.png")
    assert main(["predict", out, image, "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert sorted(t["class"] for t in result["top"]) == ["a", "b", "c"]
    assert sum(t["probability"] for t in result["top"]) == pytest.approx(1.0, abs=1e-5)
    assert runs.load_run(out)["metrics"]["test"]["n"] == 6
