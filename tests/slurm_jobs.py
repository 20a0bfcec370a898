"""Functions that tests/test_slurm.py runs as SLURM jobs (the job imports this module by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def job_environment(value: int) -> dict:
    """`value * 2` and the SLURM / torch.distributed variables the job ran with."""
    names = ("SLURM_JOB_ID", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {"double": value * 2, **{name: os.environ.get(name) for name in names}}


def resumable_steps(state_dir: str, steps: int, seconds_per_step: float) -> list[int]:
    """Run `steps` slow steps, resuming after the last one finished by an earlier run.

    `steps.log` is both the record of finished steps (one index per line) and the checkpoint: a run
    starts at the number of lines in it. `starts.log` gets the step each run started at.
    Returns the finished step indices in the order they were logged.
    """
    state = Path(state_dir)
    steps_log, starts_log = state / "steps.log", state / "starts.log"
    first = len(steps_log.read_text().splitlines()) if steps_log.exists() else 0
    with starts_log.open("a") as starts:
        starts.write(f"{first}\n")
    for step in range(first, steps):
        time.sleep(seconds_per_step)
        with steps_log.open("a") as log:
            log.write(f"{step}\n")
    return [int(line) for line in steps_log.read_text().splitlines()]
