"""Test-only kill points: a training callback that has the process send itself a signal at a chosen step.

A test runs a child process with `conftest.kill_env(POINT)`: CNNLAB_TEST_KILL_AT=EPOCH:STEP[:SIGNAL[:RANK]]
and this folder first on PYTHONPATH, where `sitecustomize` wraps `cnnlab.training.train` so that every
training in the process (and in the processes it starts) gets a `KillPoint` as its last callback. The
process then sends itself SIGKILL (or the signal named, e.g. INT for a Ctrl-C) right after training step
STEP of epoch EPOCH, or with STEP `end` after the epoch's callbacks (its record logged) and before its
checkpoint; under torchrun every rank does, or RANK alone. cnnlab itself never reads the variable.
"""

from __future__ import annotations

import functools
import inspect
import signal
from dataclasses import dataclass

from cnnlab import distributed
from cnnlab.training import Callback

KILL_AT = "CNNLAB_TEST_KILL_AT"


@dataclass(frozen=True)
class KillPoint(Callback):
    """After step `step` (an int) of `epoch`, or at its `end`: the process signals itself."""

    epoch: int
    step: int | str
    signal: signal.Signals = signal.SIGKILL

    @classmethod
    def parse(cls, text: str, rank: int = 0) -> KillPoint | None:
        """The point `text` (EPOCH:STEP[:SIGNAL[:RANK]]) names; None when it names another rank than `rank`."""
        parts = text.split(":")
        try:
            if len(parts) > 4:
                raise ValueError
            epoch, step = int(parts[0]), parts[1] if parts[1] == "end" else int(parts[1])
            sig = signal.Signals["SIG" + parts[2].upper()] if len(parts) > 2 else signal.SIGKILL
            ranks = {int(parts[3])} if len(parts) > 3 else None
        except (IndexError, KeyError, ValueError):
            raise ValueError(
                f"{KILL_AT}={text!r}: expected EPOCH:STEP[:SIGNAL[:RANK]], e.g. 2:5 or 3:end:INT"
            ) from None
        return cls(epoch, step, sig) if ranks is None or rank in ranks else None

    def on_step_end(self, epoch: int, step: int | str) -> None:
        if epoch == self.epoch and step == self.step:
            signal.raise_signal(self.signal)  # a Python handler (SIGINT's) has run when this returns

    def on_epoch_end(self, epoch: int, record: dict, model) -> None:
        self.on_step_end(epoch, "end")


def install(text: str) -> None:
    """Every later call of cnnlab.training.train gets the kill point `text` as its last callback (read
    when the training starts, under torchrun once the rank is known)."""
    import cnnlab.training as training

    original = training.train
    parameters = inspect.signature(original)

    @functools.wraps(original)
    def train(*args, **kwargs):
        bound = parameters.bind(*args, **kwargs)
        point = KillPoint.parse(text, distributed.rank())
        if point is not None:
            bound.arguments["callbacks"] = [*bound.arguments.get("callbacks", ()), point]
        return original(*bound.args, **bound.kwargs)

    training.train = train
