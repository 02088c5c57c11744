"""The package's metadata: the licence declared is the one shipped."""

import pathlib
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_declared_licence_is_the_shipped_mit_text():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 cnnlab contributors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]  # PEP 639: the expression alone
