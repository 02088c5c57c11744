"""Progress bars are drawn on a terminal only: a log file or a pipe gets the printed lines, not a bar redrawn
hundreds of times with carriage returns (what `cnnlab train ... > train.log 2>&1` and tools/tutorial.py capture)."""

import io
import os
import subprocess
import sys

from conftest import ROOT, make_dataset

from cnnlab.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_drawn_on_a_terminal_only_when_asked_for(monkeypatch):
    for stream, shown, drawn in ((Terminal(), True, True), (Terminal(), False, False), (io.StringIO(), True, False)):
        monkeypatch.setattr(sys, "stderr", stream)
        for _ in progress_bar(shown, range(3), desc="decoding"):
            pass
        assert ("decoding" in stream.getvalue()) is drawn, (type(stream).__name__, shown)


def test_a_command_whose_output_is_captured_prints_its_lines_without_bars(tmp_path):
    make_dataset(tmp_path / "data", 10, 3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab", "data", "info", "data"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "Found 27 images belonging to 3 classes.  (training)" in proc.stdout
    assert "\r" not in proc.stdout + proc.stderr and "img/s" not in proc.stderr, proc.stderr
