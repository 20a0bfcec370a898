# clipvis: every table of the paper with one command.
#   snakemake --cores 2 reproduce_all                      # toy scale, CPU, minutes
#   snakemake --profile workflow/profiles/slurm reproduce_all --config scale=paper
# Rules only call the `clipvis` CLI; what each stage does lives in the clipvis package.

from snakemake.utils import validate

configfile: f"{workflow.basedir}/workflow/config.yaml"
validate(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")

SCALE = config["scale"]
S = config[SCALE]
ROOT = config["data_root"]
RUNS = f"runs/{SCALE}"

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/report.smk"


rule reproduce_all:
    input: TABLES
    default_target: True


# `snakemake reproduce-all` (the name users type) asks for this file.
rule reproduce_all_alias:
    input: TABLES
    output: touch("reproduce-all")
