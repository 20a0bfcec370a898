"""Run a stage function in process, or submit the same function to SLURM through submitit.

On SLURM one task runs per GPU (at least one task), each with the torch.distributed environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) exported, so the stage runs DDP. On preemption or
time-out submitit calls `checkpoint()`, which requeues the same call; stages resume from their own
last checkpoint, so the requeued job continues where the first stopped. Logs go to `<log_dir>/slurm/`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from clipvis.config import Config

log = logging.getLogger(__name__)


def launch(cfg: Config, fn: Callable, *args: Any, job_name: str, log_dir: str | Path, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` where `cfg.launch.launcher` says; returns its result."""
    if cfg.launch.launcher == "local":
        return fn(*args, **kwargs)
    job = submit(cfg, DistributedCall(fn, args, kwargs), job_name, log_dir)
    log.info("submitted SLURM job %s (%s); logs in %s", job.job_id, job_name, Path(log_dir) / "slurm")
    return job.results()[0]


def submit(cfg: Config, call: Callable, job_name: str, log_dir: str | Path):
    """Submit `call` with the resources of `cfg.launch`; returns the submitit job."""
    import submitit

    # submitit's import gives its logger handlers on stdout and stderr; here its records go to the
    # application's logging only, so the command's stdout stays its result (the job keeps its own).
    logging.getLogger("submitit").handlers.clear()
    resources = cfg.launch
    executor = submitit.AutoExecutor(folder=Path(log_dir) / "slurm", cluster="slurm")
    parameters = dict(name=job_name, nodes=resources.nodes, tasks_per_node=max(1, resources.gpus_per_node),
                      cpus_per_task=resources.cpus_per_task, mem_gb=resources.mem_gb,
                      timeout_min=resources.timeout_min, slurm_partition=resources.partition)
    if resources.gpus_per_node:
        parameters["gpus_per_node"] = resources.gpus_per_node
    executor.update_parameters(**parameters)
    return executor.submit(call)


class DistributedCall:
    """A picklable call that sets up torch.distributed's environment and is requeued on preemption."""

    def __init__(self, fn: Callable, args: tuple, kwargs: dict):
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self) -> Any:
        import submitit

        # sbatch hands the job the submitter's environment: replace any RANK/MASTER_* found there.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        return self.fn(*self.args, **self.kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on preemption / time-out: requeue the same call (the stage resumes itself)."""
        import submitit

        log.info("requeueing %s", getattr(self.fn, "__name__", self.fn))
        return submitit.helpers.DelayedSubmission(self)
