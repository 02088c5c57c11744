"""tools/code_shape.py, the advisory list of long functions and long parameter lists, measures what it says."""

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import code_shape  # noqa: E402  (a script of tools/, not a package)


def test_the_measures_count_what_they_say(tmp_path):
    source = "def f(self, a, b=1, *args, c, d=2, **kw):\n    '''doc'''\n    x = 1\n\n    return x\n"
    node = ast.parse(source).body[0]
    assert code_shape.parameters(node) == ["a", "b", "c", "d"]
    assert code_shape.body_lines(node) == 4
    found = code_shape.shapes([ROOT / "cnnlab"])
    assert len(found) > 500  # the walk reaches the package's functions, methods and nested ones
    assert any(shape.where.startswith("cnnlab/training.py:") and shape.where.endswith(" train") for shape in found)


def test_the_lists_name_the_longest_first(tmp_path, capsys, monkeypatch):
    (tmp_path / "m.py").write_text(
        "def short(a):\n    return a\n\n\ndef longer(a, b, c):\n    x = a\n    y = b\n    return x + y + c\n"
    )
    monkeypatch.setattr(code_shape, "ROOT", tmp_path)
    code_shape.main([str(tmp_path), "--top", "1"])
    out = capsys.readouterr().out
    assert "most lines (0 of 2 functions above 60):\n     3  m.py:5 longer" in out
    assert "most parameters (0 of 2 functions above 8):\n     3  m.py:5 longer" in out
