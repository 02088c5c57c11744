"""Imported at the start of every Python process that has this folder on its path (conftest.kill_env):
with CNNLAB_TEST_KILL_AT set, its trainings stop at that kill point (killpoint.py). Tests only."""

import os

if os.environ.get("CNNLAB_TEST_KILL_AT"):
    import killpoint

    killpoint.install(os.environ["CNNLAB_TEST_KILL_AT"])
