"""The Snakemake DAGs, dry-run: the paper's every job with no data present, and the users' alias; the resources
SLURM jobs ask for; a killed run taken up again as `make toy` does."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def dry_run(*arguments):
    result = subprocess.run([SNAKEMAKE, "-n", *arguments], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def job_counts(text):
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_paper_dag_lists_every_job_without_data():
    counts = job_counts(dry_run("reproduce_all", "--config", "scale=paper"))
    # 6 models trained from images (4 Table I/IV rows + the 2 COCO models), 2 fine-tuned on YTVIS19
    assert counts["train"] == 6 and counts["finetune"] == 2
    # every model on the 6 benchmarks; LV-VIS val and BURST scored locally, the rest zipped for servers
    assert counts["infer"] == 6 * 6 and counts["score"] == 6 * 2
    assert counts["data_benchmark"] >= 9 and counts["complexity"] == 2 and counts["tables"] == 1
    assert "matching_test" not in counts and "toy_diagnostics" not in counts and "iou_head_quality" not in counts


def test_toy_dag_and_the_reproduce_dash_all_alias():
    counts = job_counts(dry_run("reproduce-all"))
    # the method model trains; Table IV's two variant heads train on it (toy.init)
    assert counts["pretrain_clip"] == 1 and counts["train"] == 1 and counts["finetune"] == 2 and counts["infer"] == 6
    assert counts["reproduce_all_alias"] == 1 and counts["matching_test"] == 1 and counts["toy_diagnostics"] == 1
    assert counts["iou_head_quality"] == 3  # every model's mask-IoU head (Table IV)


def test_the_ablation_model_trains_first():
    """Most toy jobs (every test-time variant, the diagnostics, the matching test) wait on the ablation model, so
    its training outranks the other trainings, which outrank everything else."""
    text = dry_run("reproduce_all")
    priorities = {}
    for block in re.split(r"\n(?=(?:local)?rule )", text):
        if re.match(r"(?:local)?rule (?:train|finetune):", block):
            model = re.search(r"wildcards: model=(\S+)", block).group(1)
            priorities[model] = int(re.search(r"priority: (\d+)", block).group(1))
    assert set(priorities) == {"default", "iou_pooled", "iou_relu"}
    assert priorities["default"] > priorities["iou_pooled"] == priorities["iou_relu"] > 0


def test_released_weights_dag_imports_instead_of_training():
    """weights=released: the authors' four checkpoints are imported and evaluated; nothing is trained."""
    text = dry_run("-p", "reproduce_all", "--config", "scale=paper", "weights=released")
    counts = job_counts(text)
    assert counts["released_weights"] == 4 and counts["import_released"] == 4
    assert "train" not in counts and "finetune" not in counts
    assert counts["infer"] == 4 * 6 and counts["score"] == 4 * 2 and counts["complexity"] == 2
    assert "clipvis import-checkpoint data/weights/clipvis_lvis_r50_7.pth --params params/paper/r50_lvis.yaml" in text
    assert "--checkpoint runs/released/paper/r50_lvis/released/model.pt" in text
    assert "--out reports/released" in text


def test_slurm_profile_jobs_run_their_stage_in_process():
    """Under the SLURM profile each job is already a SLURM job: its stage must not submit another one
    (params/paper/base.yaml says launch.launcher: slurm for commands run by hand)."""
    for scale in ("toy", "paper"):
        text = dry_run("-p", "--profile", "workflow/profiles/slurm", "reproduce_all", "--config", f"scale={scale}")
        commands = [line for line in text.splitlines() if line.startswith("Shell command: clipvis")]
        launching = [c for c in commands if c.split()[3] in ("train", "finetune", "infer", "pretrain-clip")]
        assert launching and all("--launcher local" in c for c in launching)


def test_dvc_yaml_is_generated_from_the_workflow():
    """One pipeline definition: dvc.yaml is what workflow/scripts/dvc_yaml.py writes from the Snakefile."""
    result = subprocess.run([sys.executable, REPO / "workflow" / "scripts" / "dvc_yaml.py", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # each stage runs with its Snakemake job's threads (a training's result depends on the count)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["train_default"]["cmd"].startswith("OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 clipvis train ")
    assert stages["finetune_iou_relu"]["cmd"].startswith("OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 clipvis finetune ")


def test_ablation_variants_default_to_params_variants_yaml_and_a_list_overrides(tmp_path):
    """The variant list has one home (params/variants.yaml, in its order); a workflow config may name fewer."""
    from clipvis.config import variant_names

    target = "runs/toy/default/infer/toy_lvvis/variants.json"
    text = dry_run("-p", "--forceall", target)
    assert "--variants " + " ".join(variant_names()) + " --out" in text
    shorter = tmp_path / "workflow.yaml"
    shorter.write_text("toy: {ablation_variants: [default, T9_K3]}\n")
    text = dry_run("-p", "--forceall", target, "--configfile", "workflow/config.yaml", shorter)
    assert "--variants default T9_K3 --out" in text


def test_every_rule_that_runs_a_command_logs_it():
    """Each rule with a shell command has a `log:` file and sends the command's stdout and stderr there (the
    target rules, which run nothing, have none)."""
    missing = []
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        for block in re.split(r"(?m)^(?=rule )", path.read_text())[1:]:
            block = "\n".join(line for line in block.splitlines() if not line.startswith("#"))
            name = re.match(r"rule (\w+):", block).group(1)
            if "shell:" not in block:
                assert name in ("reproduce_all", "reproduce_all_alias"), f"{name} runs no shell command"
                continue
            if not re.search(r"(?m)^    log: ", block) or not block.rstrip().endswith('> {log} 2>&1"'):
                missing.append(f"{path.name}: {name}")
    assert not missing, "rules without a log: " + ", ".join(missing)


def job_resources(text):
    """(rule, wildcards, resources) of every job a dry run lists; resources as a dict of strings."""
    jobs = []
    for line in text.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append((match.group(1), {}, {}))
        elif jobs and (match := re.match(r"^    (wildcards|resources): (.*)$", line)):
            target = jobs[-1][1] if match.group(1) == "wildcards" else jobs[-1][2]
            target.update(item.split("=", 1) for item in match.group(2).split(", "))
    return jobs


def test_slurm_jobs_ask_for_the_resources_of_their_one_home():
    """Paper scale under the SLURM profile: a training job asks for its params file's launch section, the
    other GPU stages for `resources:` of the scale in workflow/config.yaml; the profile sets no stage's."""
    import yaml

    from clipvis.config import load_config

    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert not profile.get("set-resources")
    stages = yaml.safe_load((REPO / "workflow/config.yaml").read_text())["paper"]["resources"]
    jobs = job_resources(dry_run("--profile", "workflow/profiles/slurm", "reproduce_all", "--config", "scale=paper"))
    trained = {}
    for rule, wildcards, resources in jobs:
        if rule in ("train", "finetune"):
            launch = load_config(REPO / "params/paper" / f"{wildcards['model']}.yaml").launch
            expected = {"gpu": launch.gpus_per_node * launch.nodes, "runtime": launch.timeout_min,
                        "mem_mb": launch.mem_gb * 1000, "cpus_per_task": launch.cpus_per_task}
            trained[wildcards["model"]] = {key: int(resources[key]) for key in expected}
            assert trained[wildcards["model"]] == expected, (rule, wildcards)
        elif rule in stages:
            assert {key: int(resources[key]) for key in stages[rule]} == stages[rule], (rule, wildcards)
    # params/paper/base.yaml's launch section, and the fine-tuning rows' own time limit
    assert trained["r50_lvis"] == {"gpu": 4, "runtime": 4320, "mem_mb": 64000, "cpus_per_task": 8}
    assert trained["r50_coco_ytvis19"]["runtime"] == 720 and len(trained) == 8
    assert {rule for rule, _, _ in jobs} >= {"infer", "complexity"}


def test_toy_jobs_ask_for_no_gpu():
    """Toy scale (`make toy`, the local profile): training takes params/toy's launch section, no stage a GPU."""
    jobs = job_resources(dry_run("--profile", "workflow/profiles/local", "--forceall", "reproduce_all"))
    gpu_jobs = [rule for rule, _, resources in jobs if rule in ("train", "infer", "complexity")
                and resources.get("gpu") == "0"]
    assert {"train", "infer", "complexity"} <= set(gpu_jobs)
    assert not [rule for rule, _, resources in jobs if int(resources.get("gpu", 0))]


# A job's writer: OUT gets 2000 lines made from SOURCE ("-": none), written in two halves; while HOLD exists it
# waits between them, with the first half on disk and a marker OUT.half beside it.
WRITER = """
import sys, time
from pathlib import Path

source, out, hold = sys.argv[1:]
seed = "" if source == "-" else Path(source).read_text().splitlines()[-1]
lines = [f"{out} {i} {seed}\\n" for i in range(2000)]
with open(out, "w") as f:
    f.writelines(lines[:1000])
    f.flush()
    Path(out + ".half").touch()
    while Path(hold).exists():
        time.sleep(0.05)
    f.writelines(lines[1000:])
"""

CHAIN = """
rule all:
    input: "c.txt"

rule a:
    output: "a.txt"
    shell: "{PY} writer.py - {output} none"

rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "{PY} writer.py {input} {output} hold"

rule c:
    input: "b.txt"
    output: "c.txt"
    shell: "{PY} writer.py {input} {output} none"
"""


def toy_snakemake_command():
    """The command of `make toy`, without its target."""
    [line] = [line.split("#")[0].strip() for line in (REPO / "Makefile").read_text().splitlines()
              if line.startswith("\tscripts/snakemake_resume.sh ")]
    assert line.endswith(" reproduce_all")
    return [str(REPO / line.split()[0]), *line.split()[1:-1]]


@pytest.mark.system  # about a minute: four Snakemake runs, and the killed group must be gone
def test_a_killed_snakemake_run_is_rerun_from_its_incomplete_job(tmp_path):
    """kill -9 of Snakemake and its job while the job writes (a crash), then `make toy`'s command again: the
    half-written output is rerun, never taken as done, finished jobs are kept, and the outputs are those of
    an uninterrupted run."""
    command = toy_snakemake_command()
    assert "--rerun-incomplete" in (REPO / "scripts/snakemake_resume.sh").read_text()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for folder in ("killed", "straight"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "writer.py").write_text(WRITER)
        (tmp_path / folder / "Snakefile").write_text(f"PY = {sys.executable!r}\n" + CHAIN)
    killed, straight = tmp_path / "killed", tmp_path / "straight"

    def snakemake(folder, **popen):
        return subprocess.Popen([*command, "all"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, **popen)

    (killed / "hold").touch()
    run = snakemake(killed, start_new_session=True)  # its own process group, the jobs in it
    deadline = time.monotonic() + 120
    while not (killed / "b.txt.half").exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    while time.monotonic() < deadline:  # until every process of the group is gone (and its lock with it)
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    (killed / "hold").unlink()
    assert (killed / "b.txt").read_text().count("\n") == 1000 and not (killed / "c.txt").exists()
    a_written = (killed / "a.txt").stat().st_mtime_ns

    rerun = snakemake(killed)  # Snakemake's locks of the killed run are stale
    log = rerun.communicate(timeout=180)[0]
    assert rerun.returncode == 0, log[-3000:]
    assert re.findall(r"(?m)^(?:local)?rule (\w+):$", log) == ["b", "c", "all"]  # a was done: kept
    assert (killed / "a.txt").stat().st_mtime_ns == a_written

    uninterrupted = snakemake(straight)
    assert uninterrupted.wait(timeout=180) == 0
    for name in ("a.txt", "b.txt", "c.txt"):
        assert (killed / name).read_text() == (straight / name).read_text()
    assert (killed / "c.txt").read_text().count("\n") == 2000
