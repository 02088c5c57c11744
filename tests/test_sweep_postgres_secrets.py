"""The password of a PostgreSQL --storage URL is never shown: not on any process's command line (ps),
not in the output, not in any file of the sweep directory; PGPASSWORD works in its place.

Needs a server: CNNLAB_TEST_POSTGRES=postgresql://user:password@127.0.0.1/db whose user may CREATEROLE
(.ci/run sets that up): the test makes a throwaway role with a long random password to search for.
"""

import os
import pathlib
import secrets
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from conftest import SWEEP_FLAGS, make_dataset

URL = os.environ.get("CNNLAB_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(not URL, reason="CNNLAB_TEST_POSTGRES not set (.ci/run starts PostgreSQL)")


@pytest.fixture(scope="module")
def secret_role():
    """(role, password) of a new login role allowed to use the CI database's Optuna tables."""
    import psycopg
    from sqlalchemy.engine import make_url

    optuna.storages.RDBStorage(URL)  # the tables exist, owned by the CI user, before the role uses them
    conninfo = make_url(URL).set(drivername="postgresql").render_as_string(hide_password=False)
    role, password = f"cnnlab_secret_{uuid.uuid4().hex[:8]}", "Pw" + secrets.token_hex(20)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        try:
            connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        except psycopg.errors.InsufficientPrivilege:
            pytest.fail("the CNNLAB_TEST_POSTGRES user needs CREATEROLE (see .ci/run)")
        connection.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        connection.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    yield role, password
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        connection.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
        connection.execute(f"DROP ROLE {role}")


def command_lines() -> dict[int, bytes]:
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    found[int(pid)] = fh.read().replace(b"\0", b" ")
            except OSError:  # the process has gone
                pass
    return found


def sweep_watching_ps(args, env, out, tmp_path, password, parent_may_show=False):
    """Run `cnnlab sweep ARGS` with 2 workers; while it runs, read every process's command line.
    Returns its output; asserts that it succeeded, that no command line (but the parent's, if
    `parent_may_show`) held the password and that a helper worker was seen."""
    log_out, log_err = open(tmp_path / "stdout.txt", "w+"), open(tmp_path / "stderr.txt", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnlab.cli", "sweep", *args, "--workers", "2", "--out", out],
        stdout=log_out,
        stderr=log_err,
        env=env,
    )
    parent, seen_helper, leaks = None, False, []
    deadline = time.time() + 600
    while proc.poll() is None:
        assert time.time() < deadline, "the sweep did not finish"
        lines = command_lines()
        parent = parent or lines.get(proc.pid)
        for line in lines.values():
            seen_helper |= b"--worker " in line and out.encode() in line
            # a helper between fork and exec still shows its parent's command line
            if password.encode() in line and not (parent_may_show and line == parent):
                leaks.append(line)
        time.sleep(0.02)
    log_out.seek(0), log_err.seek(0)
    stdout, stderr = log_out.read(), log_err.read()
    assert proc.returncode == 0, stderr
    assert not leaks, leaks
    assert seen_helper, "no helper worker was seen running"
    return stdout, stderr


def assert_nowhere_under(root, password):
    files = [p for p in pathlib.Path(root).rglob("*") if p.is_file()]
    assert len(files) > 10  # the sweep wrote its files
    for path in files:
        assert password not in str(path) and password.encode() not in path.read_bytes(), path


def completed(study):
    trials = optuna.load_study(study_name=study, storage=URL).get_trials()
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("secrets") / "ds", 30)


def sweep_args(dataset, study):
    return [
        "--data",
        dataset,
        "--grid",
        "batch_size=8,16",
        "--grid",
        "epochs=1,2",
        "--seeds",
        "1",
        *SWEEP_FLAGS,
        "--study",
        study,
    ]


@pytest.mark.parametrize("how", ["environment", "command line"])
def test_the_storage_password_is_in_no_command_line_output_or_file(how, secret_role, dataset, tmp_path):
    from sqlalchemy.engine import make_url

    role, password = secret_role
    secret_url = make_url(URL).set(username=role, password=password).render_as_string(hide_password=False)
    assert password in secret_url
    study, out = f"secret-{uuid.uuid4().hex[:8]}", str(tmp_path / "sweep")
    args = sweep_args(dataset, study)
    env = {k: v for k, v in os.environ.items() if k not in ("CNNLAB_STORAGE", "PGPASSWORD")}
    if how == "environment":
        env["CNNLAB_STORAGE"] = secret_url
    else:  # the user's own command line shows it (and cnnlab warns); its worker processes must not
        args += ["--storage", secret_url]
    stdout, stderr = sweep_watching_ps(args, env, out, tmp_path, password, parent_may_show=how == "command line")
    assert password not in stdout + stderr
    assert ("visible to every user of this machine" in stderr) == (how == "command line")
    assert completed(study) == 4  # the sweep ran in the database, not in a journal file
    assert not os.path.exists(os.path.join(out, "optuna.journal"))
    assert_nowhere_under(out, password)


def test_pgpassword_supplies_the_password(secret_role, dataset, tmp_path):
    from sqlalchemy.engine import URL as Url
    from sqlalchemy.engine import make_url

    role, password = secret_role
    study, out = f"pgpass-{uuid.uuid4().hex[:8]}", str(tmp_path / "sweep")
    ci = make_url(URL)
    no_password = Url.create(ci.drivername, username=role, host=ci.host, port=ci.port, database=ci.database)
    env = {**os.environ, "PGPASSWORD": password, "CNNLAB_STORAGE": no_password.render_as_string(hide_password=False)}
    assert ":" not in env["CNNLAB_STORAGE"].split("//")[1]  # no password in the URL
    sweep_watching_ps(sweep_args(dataset, study), env, out, tmp_path, password)
    assert completed(study) == 4
    assert_nowhere_under(out, password)
