"""Pytest fixture `slurm_cluster`: a SLURM that answers, started by scripts/slurm/start.sh if needed.

If a SLURM node already answers, the tests use it and leave it running. Otherwise the fixture starts
a single-node SLURM on localhost (root only: it installs Debian packages and starts daemons) and
stops what it started at the end of the session. A failed start fails the tests with its output.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "slurm"
START_TIMEOUT_S = 600  # a fresh machine installs slurm-wlm and munge first

log = logging.getLogger(__name__)


def node_answers() -> bool:
    """True when `sinfo` reaches a controller and a node is up (idle, mixed or allocated)."""
    try:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return states.returncode == 0 and any(s in ("idle", "mix", "alloc") for s in states.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster():
    if node_answers():
        yield
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no SLURM answers, and scripts/slurm/start.sh needs root and apt-get to install and start one")
    began = time.monotonic()
    started = subprocess.run(["bash", str(SCRIPTS / "start.sh")], capture_output=True, text=True,
                             timeout=START_TIMEOUT_S)
    if started.returncode != 0:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh")], capture_output=True)
        pytest.fail(f"scripts/slurm/start.sh failed (exit {started.returncode}):\n"
                    f"{started.stdout}\n{started.stderr}", pytrace=False)
    log.info("SLURM started in %.1f s", time.monotonic() - began)
    try:
        yield
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh")], check=True, capture_output=True)
