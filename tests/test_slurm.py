"""clipvis.launch and the Snakemake SLURM profile against a real SLURM (see tests/slurm_cluster.py)."""

import io
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import slurm_jobs
from clipvis import cli
from clipvis.config import Config, load_config, save_config
from clipvis.launch import DistributedCall, launch, submit
from clipvis.model.checkpoint import load_checkpoint
from clipvis.training.loop import CHECKPOINT_FINAL, CHECKPOINT_LAST, train
from conftest import TINY_MODEL
from slurm_cluster import slurm_cluster  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]
JOB_TIMEOUT_S = 120
TRAIN_ITERATIONS = 12

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("slurm_cluster")]


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


def tiny_training_config(data_root: Path) -> Config:
    """The tiny toy segmenter for 12 iterations, a checkpoint every 2 and a learning-rate step, as a small job."""
    return load_config(REPO / "params/toy/default.yaml", TINY_MODEL + [
        f"data.root={data_root}", f"train.max_iter={TRAIN_ITERATIONS}", "train.checkpoint_every=2",
        "train.log_every=1", "train.lr_steps=[6]", "launch.partition=debug", "launch.cpus_per_task=1",
        "launch.mem_gb=2", "launch.timeout_min=5"])


def mlflow_runs(uri: str, run_name: str) -> list:
    """The MLflow runs named `run_name` in the toy experiment, oldest first."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("toy/toy")
    runs = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{run_name}'")
    return sorted(runs, key=lambda run: run.info.start_time)


def logged_steps(uri: str, run) -> list[int]:
    """The iterations at which `run` logged its loss."""
    import mlflow

    history = mlflow.MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "total")
    return [metric.step for metric in history]


def same_weights(a: Path, b: Path) -> bool:
    a, b = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture(scope="module")
def slurm_training(slurm_cluster, tiny_world, tmp_path_factory):  # noqa: F811  (the fixture)
    """`clipvis train --params params.yaml --out straight --launcher slurm` in a fresh folder, run once."""
    root = tmp_path_factory.mktemp("slurm_training")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    save_config(tiny_training_config(tiny_world), root / "params.yaml")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as env, redirect_stdout(printed), deadline(JOB_TIMEOUT_S):
        env.chdir(root)  # relative paths, as the workflow passes them: the job runs where it was submitted
        env.setenv("MLFLOW_TRACKING_URI", uri)  # sbatch passes the submitter's environment to the job
        code = cli.main(["train", "--params", "params.yaml", "--out", "straight", "--launcher", "slurm"])
    return SimpleNamespace(code=code, printed=printed.getvalue(), out=root / "straight", uri=uri)


def test_train_command_runs_the_training_as_a_slurm_job(slurm_training):
    out = slurm_training.out
    assert slurm_training.code == 0
    assert slurm_training.printed == f"{Path('straight') / CHECKPOINT_FINAL}\n"  # stdout: the final checkpoint only
    assert load_checkpoint(out / CHECKPOINT_FINAL)["iteration"] == TRAIN_ITERATIONS
    assert load_checkpoint(out / CHECKPOINT_LAST)["iteration"] == TRAIN_ITERATIONS
    job_logs = list((out / "slurm").glob("*_0_log.err"))  # submitit's log of the job: the training's progress bar
    assert len(job_logs) == 1 and f"{TRAIN_ITERATIONS}/{TRAIN_ITERATIONS}" in job_logs[0].read_text()

    [run] = mlflow_runs(slurm_training.uri, out.name)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_iter"] == str(TRAIN_ITERATIONS)
    assert logged_steps(slurm_training.uri, run) == list(range(1, TRAIN_ITERATIONS + 1))


def test_preempted_training_job_resumes_from_its_checkpoint_to_the_same_weights(
        slurm_training, tiny_world, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg, out = tiny_training_config(tiny_world), tmp_path / "preempted"
    job = submit(cfg, DistributedCall(train, (cfg, out), {}), "train", out)  # what launch() submits
    with deadline(2 * JOB_TIMEOUT_S):  # two executions
        while not (out / CHECKPOINT_LAST).exists():  # the first checkpoint: iteration 2 of 12
            time.sleep(0.1)
        job._interrupt()  # what SLURM sends a job it preempts (SIGTERM, then USR2)
        final = job.result()

    assert final == out / CHECKPOINT_FINAL
    preempted, resumed = mlflow_runs(uri, out.name)  # one MLflow run per execution of the job
    assert (preempted.info.status, resumed.info.status) == ("FAILED", "FINISHED")
    stopped_after = logged_steps(uri, preempted)[-1]
    resumed_from = logged_steps(uri, resumed)[0] - 1
    assert 2 <= resumed_from <= stopped_after < TRAIN_ITERATIONS and resumed_from % 2 == 0  # its last checkpoint
    assert logged_steps(uri, resumed) == list(range(resumed_from + 1, TRAIN_ITERATIONS + 1))
    assert same_weights(final, slurm_training.out / CHECKPOINT_FINAL)


def test_infer_command_runs_as_a_slurm_job_with_the_same_results(slurm_training, tiny_world, monkeypatch):
    root = slurm_training.out.parent
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", slurm_training.uri)
    arguments = ["infer", "--params", "params.yaml", "--benchmark", "toy_lvvis", "--root", str(tiny_world),
                 "--checkpoint", str(slurm_training.out / CHECKPOINT_FINAL)]
    with deadline(JOB_TIMEOUT_S):
        assert cli.main([*arguments, "--out", "infer_slurm", "--launcher", "slurm"]) == 0
    assert cli.main([*arguments, "--out", "infer_local", "--launcher", "local"]) == 0
    results = (root / "infer_slurm" / "results.json").read_text()
    assert results == (root / "infer_local" / "results.json").read_text() and results.startswith("[{")
    assert len(list((root / "infer_slurm" / "slurm").glob("*_0_log.err"))) == 1  # it ran as a job
