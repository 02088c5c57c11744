"""Property-based tests (hypothesis) for the folder scanner and the config parser."""

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import tempfile
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab import runs
from cnnlab.cli import main
from cnnlab.config import Config, Size, load_config_file, parse_config
from cnnlab.data.folder import IMAGE_EXTENSIONS, scan_folder
from cnnlab.errors import CnnlabError, ConfigError

names = st.text(alphabet="abcXYZ_-0189", min_size=1, max_size=6)
extensions = st.sampled_from(list(IMAGE_EXTENSIONS) + ["txt", "gif", "json", "PNG", "JpEg", "Tiff", ""])
files = st.tuples(st.lists(names, max_size=2), names, extensions)  # (sub-folders, stem, extension)


def keras_order(root: str, cls: str) -> list[str]:
    """Keras's rule: os.walk of the class folder sorted by path, each folder's files by name, extensions
    compared in lower case; paths relative to `root`."""
    found = []
    for folder, _dirs, names in sorted(os.walk(os.path.join(root, cls)), key=lambda entry: entry[0]):
        images = [n for n in sorted(names) if n.lower().endswith(tuple("." + e for e in IMAGE_EXTENSIONS))]
        found.extend(os.path.relpath(os.path.join(folder, n), root) for n in images)
    return found


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tree=st.dictionaries(names, st.lists(files, min_size=1, max_size=8), min_size=1, max_size=4),
    root_files=st.lists(st.tuples(names, st.sampled_from(["txt", "json", ""])), max_size=3),
)
def test_scanner_finds_exactly_the_images_in_keras_order(tree, root_files):
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for cls, entries in tree.items():
            (root / cls).mkdir(exist_ok=True)
            for subdirs, stem, ext in entries:
                folder = root.joinpath(cls, *subdirs)
                if any(p.is_file() for p in [folder, *folder.parents] if root in p.parents):
                    continue  # a file already holds that name
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / (f"{stem}.{ext}" if ext else stem)
                if not target.is_dir():
                    target.write_bytes(b"")
        for stem, ext in root_files:
            target = root / (f"{stem}.{ext}" if ext else stem)
            if not target.exists():
                target.write_bytes(b"")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        expected = {
            cls: {
                str(p.relative_to(root))
                for p in (root / cls).rglob("*")
                if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS
            }
            for cls in classes
        }
        if not all(expected.values()):
            try:
                scan_folder(str(root))
            except CnnlabError as exc:
                assert "holds no images" in str(exc)
                return
            raise AssertionError("an empty class folder was accepted")
        scan = scan_folder(str(root))
        assert scan.classes == classes
        assert len(scan.files) == len(set(scan.files)) == sum(map(len, expected.values()))
        for cls_index, cls in enumerate(classes):
            mine = [f for f, label in zip(scan.files, scan.labels) if label == cls_index]
            assert set(mine) == expected[cls]
            by_folder = {}
            for f in mine:  # within each folder, files come in sorted name order
                by_folder.setdefault(os.path.dirname(f), []).append(os.path.basename(f))
            assert all(v == sorted(v) for v in by_folder.values())
            assert mine == keras_order(str(root), cls)
        assert scan.labels == sorted(scan.labels)


HINTS = typing.get_type_hints(Config)
FINITE = dict(allow_nan=False, allow_infinity=False)
# The ranges `validate` accepts, by key; every other field takes any value of its type.
RANGES = {
    "epochs": st.integers(1, 10**6),
    "batch_size": st.integers(1, 10**6),
    "eval_batch_size": st.integers(1, 10**6),
    "val_fraction": st.floats(0.0, 1.0, exclude_max=True),
    "label_smoothing": st.floats(0.0, 1.0, exclude_max=True),
    "lr": st.one_of(st.floats(0.0, 1e6, exclude_min=True), st.integers(1, 10**6)),
    "weight_decay": st.floats(0.0, 1e6),
    "backbone_lr_scale": st.floats(0.0, 1e6),
    "rrc_scale_min": st.floats(0.0, 1.0, exclude_max=True),
    "warmup_epochs": st.one_of(st.floats(0.0, 1e6), st.integers(0, 10**6)),
    "memory_gb": st.floats(0.0, 1e6),
    "device_memory_gb": st.floats(0.0, 1e6),
    "muon_lr": st.floats(0.0, 1e6, exclude_min=True),
    "muon_momentum": st.floats(0.0, 1.0, exclude_max=True),
    "whiten_bias_epochs": st.floats(0.0, 1e6),
    "brightness": st.floats(0.0, 1e6),
    "contrast": st.floats(0.0, 1.0, exclude_max=True),
    "tta_share": st.floats(0.0, 1.0, exclude_min=True),
    "device": st.one_of(st.sampled_from(["auto", "cpu", "cuda"]), st.integers(0, 64).map(lambda n: f"cuda:{n}")),
    # k-fold: off, or at least 2 folds; `fold` must lie below `folds` (a rule across keys, tests/test_kfold.py),
    # so drawn alone it is the first fold, valid under every `folds`
    "folds": st.one_of(st.just(0), st.integers(2, 10**6)),
    "fold": st.just(0),
    # early_epochs at most `epochs` (>= 1 here), early_size below a square input_size (rules across keys,
    # tests/test_early_size.py): drawn alone, early_size is off
    "early_epochs": st.one_of(st.floats(0.0, 1.0), st.integers(0, 1)),
    "early_size": st.just(0),
}


def valid_value(name):
    kind = HINTS[name]
    if name in RANGES:
        return RANGES[name]
    if typing.get_origin(kind) is typing.Literal:
        return st.sampled_from(typing.get_args(kind))
    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.integers(0, 2**40)  # the int fields without a range in RANGES are all >= 0
    if kind is float:
        return st.one_of(st.floats(**FINITE), st.integers(-(10**6), 10**6))  # JSON may hold 1 for 1.0
    if kind is str:
        return st.text(max_size=12)
    if kind is Size:  # a side, or HxW when not square
        return st.one_of(
            st.integers(0, 4096),
            st.tuples(st.integers(1, 4096), st.integers(1, 4096))
            .filter(lambda hw: hw[0] != hw[1])
            .map(lambda hw: f"{hw[0]}x{hw[1]}"),
        )
    raise AssertionError(f"config field {name!r} has a type this test does not draw: {kind}")


def as_flags(values):
    """The `cnnlab train` flags that set `values` (`--key=value`, so values may start with '-')."""
    flags = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if HINTS[name] is bool:
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags.append(f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}")
    return flags


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_config_round_trips_and_rejects_bad_values_by_key(data):
    fields = [f.name for f in dataclasses.fields(Config)]
    chosen = data.draw(st.lists(st.sampled_from(fields), unique=True))
    values = {name: data.draw(valid_value(name), label=name) for name in chosen}
    cfg = parse_config(values)
    for name, value in values.items():  # each value lands in its field as given, with its field's type
        field_type = float if HINTS[name] is float else type(value)
        assert getattr(cfg, name) == value and type(getattr(cfg, name)) is field_type, name
    assert {k: v for k, v in cfg.to_dict().items() if k not in values} == {
        k: v for k, v in Config().to_dict().items() if k not in values
    }
    assert parse_config(cfg.to_dict()) == cfg
    with tempfile.TemporaryDirectory() as tmp:  # through a JSON file, as a run's config.json or --config
        path = os.path.join(tmp, "config.json")
        runs.write_json(path, cfg.to_dict())
        assert load_config_file(path) == cfg
    printed = io.StringIO()  # through the command line: every value as its flag
    with contextlib.redirect_stdout(printed):
        assert main(["train", *as_flags(values), "--print-config"]) == 0
    # the command line makes the paths absolute (data, init_from, a pretrained file): everything else as given
    root = cfg.data or os.environ.get("CNNLAB_DATA", "")
    paths = {
        k: os.path.abspath(v)
        for k, v in (("data", root), ("init_from", cfg.init_from), ("pretrained", cfg.pretrained))
        if v and v != "hub"
    }
    assert parse_config(json.loads(printed.getvalue())) == cfg.replace(**paths)
    key = data.draw(st.sampled_from(fields))
    bad = data.draw(
        st.one_of(
            st.lists(st.integers(), max_size=2),
            st.dictionaries(names, st.integers(), max_size=1),
            st.text(alphabet="qwz!?", min_size=1, max_size=4),
            st.none(),
        )
    )
    try:
        parse_config({**values, key: bad})
    except ConfigError as exc:
        assert repr(key) in str(exc)
    else:
        assert HINTS[key] is str and isinstance(bad, str)  # any text is a valid string field
    unknown = data.draw(names.filter(lambda n: n not in fields))
    try:
        parse_config({unknown: 1})
    except ConfigError as exc:
        assert unknown in str(exc)
    else:
        raise AssertionError("an unknown key was accepted")
