"""The GPU check (scripts/gpu_check.sh): its CPU parts run here, and its training parts run on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipvis.bench.gpu import _ddp_run, amp_training

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run its GPU parts")
def test_script_runs_its_cpu_parts_and_says_no_cuda_device(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run([str(REPO / "scripts" / "gpu_check.sh"), str(out), "--frames", "2", "--height", "64",
                           "--width", "96"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA device" in done.stdout and "Traceback" not in done.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "no CUDA device"
    assert report["environment"]["cuda_available"] is False
    assert report["cpu_reference"]["detections"] == 50 and report["cpu_reference"]["frames"] == 2
    assert not {"amp_training", "ddp", "inference", "cpu_vs_gpu"} & set(report)


def test_training_parts_run_on_cpu():
    """What the check runs on the GPU, run on CPU: paper-size training steps, and two DDP ranks (gloo)
    that end with the same weights."""
    training = amp_training(torch.device("cpu"), steps=1, batch_size=1, size=64, seed=0)
    assert training["loss_finite"] and training["autocast"] is None and training["peak_memory_gb"] is None
    ddp = _ddp_run(2, "gloo", one_gpu_each=False, seed=0)
    assert "error" not in ddp, ddp
    assert ddp["weights_identical"] and ddp["losses_finite"] and ddp["devices"] == ["cpu", "cpu"]
