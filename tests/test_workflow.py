"""The Snakemake DAGs, dry-run: the paper's every job with no data present, and the users' alias."""

import subprocess
import sys
from pathlib import Path

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
    assert "matching_test" not in counts and "toy_diagnostics" not in counts


def test_toy_dag_and_the_reproduce_dash_all_alias():
    counts = job_counts(dry_run("reproduce-all"))
    assert counts["pretrain_clip"] == 1 and counts["train"] == 3 and counts["infer"] == 6
    assert counts["reproduce_all_alias"] == 1 and counts["matching_test"] == 1 and counts["toy_diagnostics"] == 1
