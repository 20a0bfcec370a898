"""The whole toy pipeline through Snakemake (`reproduce_all`, tiny sizes); then, from scratch, through DVC
(dvc.yaml generated from the workflow) with the same tables, and an ablation variant as `dvc exp run`."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = """
toy: {frame_size: 48, min_frames: 12, max_frames: 13, train_images: 12, train_videos: 2, val_videos: 2,
      ovis_videos: 2, caption_images: 60, heldout_captions: 10, val_images: 3}
clip_pretrain: {epochs: 1, batch_size: 32}
model: {hidden_dim: 32, num_queries: 8, heads: 4, dec_layers: 3, dec_ffn_dim: 64, enc_layers: 1,
        enc_ffn_dim: 64, mask_dim: 32}
train: {max_iter: 6, batch_size: 2, image_size: 64, num_points: 256, checkpoint_every: 3, log_every: 2}
infer: {min_size: 48}
"""

# Two of the three trained models (Table IV's iou_pooled is left out): every stage is a process of ~10 s
# of imports on 2 cores, and the pipeline runs three times below.
WORKFLOW = {"toy": {"params_dir": "params/toy", "models": ["default", "iou_relu"], "init": {"iou_relu": "default"},
                    "extra_variants": {"iou_relu": ["iou_only"]},
                    "benchmarks": ["toy_lvvis", "toy_ovis"], "ablation_benchmarks": ["toy_lvvis", "toy_ovis"],
                    "complexity_models": ["default"], "complexity_frame": [48, 64], "ablation_model": "default",
                    "ablation_variants": ["default", "no_woc_no_tkm", "woc_no_tkm", "adjacent", "T9_K3"],
                    "pretrain_clip": True, "image_benchmarks": ["toy_lvis_val"],
                    "qualitative_videos": ["toy_lvvis/00001"], "diagnostics": True,
                    "matching_test": {"benchmark": "toy_ovis", "variants": ["adjacent", "T9_K3"], "noise": [0, 1]}}}


def run(command, cwd, env):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout


@pytest.mark.system
def test_reproduce_all_then_a_dvc_experiment(tmp_path):
    work = tmp_path / "work"
    shutil.copytree(REPO / "params", work / "params")
    # DVC reads parameters literally from params/toy/default.yaml: merge the tiny sizes into it.
    default = work / "params" / "toy" / "default.yaml"
    params = yaml.safe_load(default.read_text())
    for section, values in yaml.safe_load(TINY).items():
        params.setdefault(section, {}).update(values)
    default.write_text(yaml.safe_dump(params))
    (tmp_path / "workflow.yaml").write_text(yaml.safe_dump(WORKFLOW))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
           "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}

    run([BIN / "snakemake", "-s", REPO / "Snakefile", "--directory", work, "--cores", "2", "reproduce_all",
         "--configfile", tmp_path / "workflow.yaml"], work, env)

    table1 = (work / "reports" / "tables" / "table1.md").read_text()
    assert "default · default" in table1 and "missing" not in table1.split("default · default")[1].split("\n")[0]
    summary = json.loads((work / "reports" / "summary.json").read_text())
    assert {"table2/default · woc_no_tkm/LV-VIS AP", "table4/iou_relu · default/LV-VIS AP",
            "table4/iou_relu · iou_only/LV-VIS AP"} <= set(summary)
    assert (work / "reports" / "index.html").exists() and (work / "reports" / "tables" / "table5.tex").exists()
    assert json.loads((work / "runs/toy/default/bench/complexity.json").read_text())["gflops_per_frame"] > 0
    assert {f"images/{model}/toy_lvis_val AP" for model in WORKFLOW["toy"]["models"]} <= set(summary)
    assert (work / "reports" / "qualitative" / "default" / "toy_lvvis_00001" / "overlay.gif").is_file()
    assert "switch_rate" in json.loads((work / "runs/toy/default/infer/toy_lvvis/T9_K3/matching.json").read_text())
    assert "matching_test/default/toy_ovis/T9_K3 noise 1 AP" in summary
    assert "diagnostics/default/toy_ovis visible to the CLIP grid %" in summary
    assert {f"iou_head/{model}/toy_ovis mean abs. error, all queries" for model in WORKFLOW["toy"]["models"]} <= set(summary)

    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(search_all_experiments=True)
    assert {"pretrain_clip", "train", "infer", "score", "eval_images"} <= set(runs["tags.stage"])
    assert (runs["tags.stage"] == "train").sum() == 2

    # Another world seed in the params file: Snakemake regenerates the world (its params trigger), and so reruns
    # every stage after it.
    default.write_text(yaml.safe_dump({**params, "toy": {**params["toy"], "seed": params["toy"]["seed"] + 1}}))
    plan = run([BIN / "snakemake", "-s", REPO / "Snakefile", "--directory", work, "-n", "reproduce_all",
                "--configfile", tmp_path / "workflow.yaml"], work, env)
    default.write_text(yaml.safe_dump(params))
    assert re.search(r"(?m)^rule data_toy:$", plan) and re.search(r"(?m)^rule train:$", plan), plan[-3000:]

    # DVC runs the same pipeline (dvc.yaml generated from the workflow) from scratch: the same tables.
    fresh = tmp_path / "fresh"
    shutil.copytree(work / "params", fresh / "params")
    shutil.copy(REPO / ".gitignore", fresh / ".gitignore")
    (fresh / "dvc.yaml").write_text(run([sys.executable, REPO / "workflow" / "scripts" / "dvc_yaml.py", "--configfile",
                                         tmp_path / "workflow.yaml"], REPO, env))
    fresh_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{fresh}/mlflow.db"}
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "ci@clipvis"],
                    ["git", "config", "user.name", "ci"], [BIN / "dvc", "init", "-q"],
                    [BIN / "clipvis", "data", "--benchmark", "toy", "--params", "params/toy/default.yaml"],
                    [BIN / "dvc", "repro", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "pipeline"]):
        run(command, fresh, fresh_env)
    by_dvc = json.loads((fresh / "reports" / "summary.json").read_text())
    timing = {key for key in summary if "FPS" in key}
    assert {k: v for k, v in by_dvc.items() if k not in timing} == {k: v for k, v in summary.items() if k not in timing}

    # An ablation parameter changed as a DVC experiment, in the params file of one model: only the stages
    # that read that file rerun ("+": the key is new to that file).
    untouched = (fresh / "runs/toy/default/train/model_final.pt").stat().st_mtime_ns
    run([BIN / "dvc", "exp", "run", "-S", "params/toy/iou_relu.yaml:+matching.topk=1", "-n", "top1"], fresh, fresh_env)
    assert (fresh / "runs/toy/default/train/model_final.pt").stat().st_mtime_ns == untouched
    rerun = yaml.safe_load((fresh / "runs/toy/iou_relu/infer/toy_ovis/default/config.yaml").read_text())
    assert rerun["matching"]["topk"] == 1
    experiments = json.loads(run([BIN / "dvc", "exp", "show", "--json"], fresh, fresh_env))
    names = json.dumps(experiments)
    assert "top1" in names and "LV-VIS AP" in names
