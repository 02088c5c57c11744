"""Property-based tests (hypothesis) for the folder scanner and the config parser."""
import dataclasses
import os
import pathlib
import tempfile
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.config import Config, parse_config
from cnnlab.data.folder import IMAGE_EXTENSIONS, scan_folder
from cnnlab.errors import CnnlabError, ConfigError

names = st.text(alphabet="abcXYZ_-0189", min_size=1, max_size=6)
extensions = st.sampled_from(list(IMAGE_EXTENSIONS) + ["txt", "gif", "json", "PNG", "JpEg", "Tiff", ""])
files = st.tuples(st.lists(names, max_size=2), names, extensions)  # (sub-folders, stem, extension)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.dictionaries(names, st.lists(files, min_size=1, max_size=8), min_size=1, max_size=4),
       root_files=st.lists(st.tuples(names, st.sampled_from(["txt", "json", ""])), max_size=3))
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
        expected = {cls: {str(p.relative_to(root)) for p in (root / cls).rglob("*")
                          if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS}
                    for cls in classes}
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
        assert scan.labels == sorted(scan.labels)


HINTS = typing.get_type_hints(Config)


def valid_value(name):
    kind = HINTS[name]
    if typing.get_origin(kind) is typing.Literal:
        return st.sampled_from(typing.get_args(kind))
    if kind is bool:
        return st.booleans()
    return st.just(getattr(Config(), name))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_config_round_trips_and_rejects_bad_values_by_key(data):
    fields = [f.name for f in dataclasses.fields(Config)]
    chosen = data.draw(st.lists(st.sampled_from(fields), unique=True, max_size=6))
    values = {name: data.draw(valid_value(name)) for name in chosen}
    cfg = parse_config(values)
    assert parse_config(cfg.to_dict()) == cfg
    key = data.draw(st.sampled_from(fields))
    bad = data.draw(st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(names, st.integers(), max_size=1),
                              st.text(alphabet="qwz!?", min_size=1, max_size=4), st.none()))
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
