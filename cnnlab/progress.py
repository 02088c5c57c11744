"""Progress bars, for every long step of cnnlab (decoding, training, checking, downloading): tqdm on stderr,
drawn when asked for and stderr is a terminal (or a notebook's output, which redraws a bar as a terminal
does). In a log file or a pipe (`cnnlab train ... > train.log 2>&1`, CI) a bar would be hundreds of
redrawings joined by carriage returns; there the printed lines say the same once."""

from __future__ import annotations

import sys
from collections.abc import Iterable


def drawn(shown: bool) -> bool:
    """Whether a bar asked for (`shown`) is drawn here: stderr is a terminal or a Jupyter kernel's output."""
    return bool(shown) and (sys.stderr.isatty() or "ipykernel" in sys.modules)


def progress_bar(shown: bool, iterable: Iterable | None = None, **kwargs):
    """A tqdm bar (with tqdm's keywords: total, desc, unit, leave...), disabled unless `drawn(shown)`."""
    from tqdm import tqdm  # imported when a bar is made: `cnnlab --help` stays quick

    return tqdm(iterable, disable=not drawn(shown), **kwargs)
