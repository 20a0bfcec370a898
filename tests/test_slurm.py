"""clipvis.launch and the Snakemake SLURM profile against a real SLURM (see tests/slurm_cluster.py)."""

import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import slurm_jobs
from clipvis.config import Config
from clipvis.launch import DistributedCall, launch, submit
from slurm_cluster import slurm_cluster  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 120

pytestmark = pytest.mark.usefixtures("slurm_cluster")


@pytest.fixture
def slurm_cfg(monkeypatch) -> Config:
    """Smallest SLURM request; jobs find tests/slurm_jobs.py through the PYTHONPATH sbatch passes on."""
    monkeypatch.setenv("PYTHONPATH", str(Path(slurm_jobs.__file__).parent))
    cfg = Config()
    cfg.launch.launcher, cfg.launch.partition = "slurm", "debug"
    cfg.launch.cpus_per_task, cfg.launch.mem_gb, cfg.launch.timeout_min = 1, 1, 5
    return cfg


@contextmanager
def deadline(seconds: int):
    """Raise TimeoutError in the block after `seconds` (a job whose state SLURM lost would wait forever)."""
    def expire(signum, frame):
        raise TimeoutError(f"no result after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_launch_runs_the_function_as_a_slurm_job_with_the_distributed_environment(slurm_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "7")  # stale value in the submitting shell; the job must set its own
    with deadline(JOB_TIMEOUT_S):
        env = launch(slurm_cfg, slurm_jobs.job_environment, 21, job_name="roundtrip", log_dir=tmp_path)
    assert env["double"] == 42
    assert env["SLURM_JOB_ID"].isdigit()
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"]) == ("0", "0", "1")
    assert list((tmp_path / "slurm").glob(f"{env['SLURM_JOB_ID']}_0_log.out"))


def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint(slurm_cfg, tmp_path):
    steps = 8
    call = DistributedCall(slurm_jobs.resumable_steps, (str(tmp_path), steps, 0.5), {})
    job = submit(slurm_cfg, call, "requeue", tmp_path / "logs")
    steps_log = tmp_path / "steps.log"
    with deadline(JOB_TIMEOUT_S):
        while not steps_log.exists() or len(steps_log.read_text().split()) < 2:
            time.sleep(0.1)
        job._interrupt()  # submitit's own preemption signal (SIGTERM, then USR2)
        finished = job.result()
    starts = [int(s) for s in (tmp_path / "starts.log").read_text().split()]
    assert finished == list(range(steps))  # every step once, none redone after the requeue
    assert len(starts) == 2 and starts[0] == 0 and 2 <= starts[1] < steps


def test_snakemake_profile_runs_a_rule_as_a_slurm_job(tmp_path):
    (tmp_path / "Snakefile").write_text(
        'rule job_id:\n'
        '    output: "job_id.txt"\n'
        '    resources: slurm_partition="debug", runtime=5, mem_mb=100\n'
        '    shell: "echo $SLURM_JOB_ID > {output}"\n')
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(REPO / "workflow/profiles/slurm"),
         "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path), "-j", "1"],
        capture_output=True, text=True, timeout=JOB_TIMEOUT_S + 60)
    assert run.returncode == 0, run.stderr[-3000:]
    submitted = re.search(r"submitted with SLURM jobid (\d+)", run.stderr)
    assert submitted, run.stderr[-3000:]
    assert (tmp_path / "job_id.txt").read_text().strip() == submitted.group(1)
