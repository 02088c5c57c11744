"""Sweeps and searches against hostile input (issue 10): secrets in storage URLs, hostile grid values,
no validation split, failures without a reason, repeated TPE proposals, skewed clocks, Holm's
correction, reports of a search."""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import optuna
import pytest

from cnnlab import preset
from cnnlab.cli import main
from conftest import SWEEP_FLAGS, make_dataset

PASSWORD = "Xq7hunter2Secret"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("hardening") / "ds", 20)


def run_cli(args, timeout=300, env=None, cwd=None):
    """`cnnlab ARGS` in a child process (a hang fails the test instead of hanging the suite)."""
    return subprocess.run([sys.executable, "-m", "cnnlab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


# --- 1. storage URLs: the password is never shown -------------------------------------------------

@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://alice:{PASSWORD}@127.0.0.1:1/nothing",  # nothing listens on port 1
    f"postgresql//alice:{PASSWORD}@127.0.0.1/nothing",  # not a URL SQLAlchemy can parse
])
def test_a_bad_storage_url_is_reported_without_its_password(url, tmp_path):
    proc = run_cli(["sweep", "--grid", "lr=0.1,0.2", "--storage", url, "--out", str(tmp_path / "sw"), "--no-progress"])
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "alice:***@127.0.0.1" in errors[0], errors[0]
    assert PASSWORD not in proc.stderr + proc.stdout
    for path in pathlib.Path(tmp_path).rglob("*"):
        assert not path.is_file() or PASSWORD.encode() not in path.read_bytes(), path


def test_redact_url():
    from cnnlab.studies import redact_url

    assert redact_url(f"postgresql://bob:{PASSWORD}@db.example:5433/sweeps") == "postgresql://bob:***@db.example:5433/sweeps"
    assert redact_url("postgresql://bob@db/sweeps") == "postgresql://bob@db/sweeps"  # PGPASSWORD / .pgpass
    assert redact_url("postgresql://bob:p%40ss%2Fw@db/x") == "postgresql://bob:***@db/x"
    assert redact_url(f"not a url bob:{PASSWORD}@db") == "not a url bob:***@db"

