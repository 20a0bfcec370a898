# clipvis: every table of the paper with one command.
#   snakemake --cores 2 reproduce_all                      # toy scale, CPU, minutes
#   snakemake --profile workflow/profiles/slurm reproduce_all --config scale=paper
#   snakemake reproduce_all --config scale=paper weights=released   # the authors' checkpoints, no training
# Rules only call the `clipvis` CLI; what each stage does lives in the clipvis package. Snakemake decides
# where a job runs (the profiles), so every stage runs in its job's process (`--launcher local`).

from snakemake.utils import validate

from clipvis import layout
from clipvis.config import DataConfig

configfile: f"{workflow.basedir}/workflow/config.yaml"
validate(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")

SCALE = config["scale"]
S = config[SCALE]
ROOT = config.get("data_root") or DataConfig.root
WEIGHTS = config["weights"]
if WEIGHTS == "released" and SCALE != "paper":
    raise ValueError("weights=released needs scale=paper: the authors released paper-scale checkpoints only")
# Runs and reports of the released weights stay apart from those of trained ones.
RUNS_ROOT = layout.RUNS if WEIGHTS == "trained" else layout.RELEASED_RUNS
REPORTS = "reports" if WEIGHTS == "trained" else "reports/released"

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/released.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/report.smk"


rule reproduce_all:
    input: TABLES
    default_target: True


# `snakemake reproduce-all` (the name users type) asks for this file.
rule reproduce_all_alias:
    input: TABLES
    output: touch("reproduce-all")
