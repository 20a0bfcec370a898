# Targets and lookups shared by the rules (configuration only; no stage logic).

import functools
import json
import os

from clipvis import layout
from clipvis.config import load_config, to_dict, variant_names
from clipvis.data.registry import get_benchmark
from clipvis.data.released import RELEASED_BY_MODEL


def runs_path(function, *names):
    """A path of the runs/ layout (clipvis/layout.py) under this workflow's runs; names may be wildcards."""
    return function(RUNS_ROOT, SCALE, *names).as_posix()


def filled(pattern):
    """A params function: the pattern with the job's wildcards."""
    return lambda wildcards: pattern.format(**dict(wildcards.items()))


# The files and folders the rules write, as Snakemake patterns.
TOY_CLIP = runs_path(layout.toy_clip)
MODEL_DIR = runs_path(layout.model_dir, "{model}")
TRAIN_DIR = runs_path(layout.train_dir, "{model}")
FINAL_CHECKPOINT = runs_path(layout.final_checkpoint, "{model}")
RELEASED_CHECKPOINT = runs_path(layout.released_checkpoint, "{model}")
INFER_DIR = runs_path(layout.infer_dir, "{model}", "{benchmark}")
VARIANTS_JSON = f"{INFER_DIR}/{layout.VARIANTS_FILE}"
SCORE_DIR = runs_path(layout.score_dir, "{model}", "{benchmark}")
SCORES_JSON = f"{SCORE_DIR}/{layout.SCORES_FILE}"
EVAL_IMAGES_DIR = runs_path(layout.eval_images_dir, "{model}", "{dataset}")
COMPLEXITY_JSON = f"{runs_path(layout.bench_dir, '{model}')}/{layout.COMPLEXITY_FILE}"
DIAGNOSTICS_JSON = f"{runs_path(layout.bench_dir, '{model}')}/{layout.TOY_DIAGNOSTICS_FILE}"
IOU_HEAD_JSON = f"{runs_path(layout.bench_dir, '{model}')}/{layout.IOU_HEAD_FILE}"
MATCHING_TEST_DIR = runs_path(layout.matching_test_dir, "{model}", "{benchmark}")
QUALITATIVE_DIR = runs_path(layout.qualitative_dir, "{model}", "{benchmark}", "{video}")
LOGS = runs_path(layout.logs_dir)


def log_file(rule_name, *wildcards):
    """A job's log (its stderr and stdout): LOGS/<rule>/<wildcard values>.log."""
    return f"{LOGS}/{rule_name}/{'_'.join('{%s}' % name for name in wildcards) or rule_name}.log"


def evaluated_models(models):
    """The models evaluated: all of them, or with weights=released those the authors released."""
    return [m for m in models if WEIGHTS == "trained" or m in RELEASED_BY_MODEL]


MODELS = evaluated_models(S["models"])


def params_file(model):
    return f"{S['params_dir']}/{model}.yaml"


@functools.cache
def model_config(model):
    return load_config(params_file(model))


def settings_of(model, section):
    """A params file's section as a string: a rule's `params` entry, so that Snakemake reruns the rule when the
    section changes (its params trigger), not only when its inputs do."""
    return json.dumps(to_dict(getattr(model_config(model), section)), sort_keys=True)


# Resources (what a SLURM job asks for; local runs set no limits) have one home each: a training job
# asks for what its model's params file gives `clipvis train --launcher slurm` (the launch section), the
# other GPU stages for what the workflow config gives them (`resources:` of the scale). The SLURM profile
# only adds the cluster's defaults for the rest.
# Trainings are the long jobs: each starts as soon as it can run, before inference and scoring, and the
# ablation model's first, since most of the later jobs (every test-time variant, the diagnostics) wait on it.
TRAINING_PRIORITY = 10


def training_priority(wildcards):
    return TRAINING_PRIORITY + (wildcards.model == S["ablation_model"])


def training_resources():
    """A train/finetune job's resources, from the launch section of the params file of the model it trains."""
    def launch(wildcards):
        return model_config(wildcards.model).launch

    return {
        "gpu": lambda wildcards: launch(wildcards).gpus_per_node * launch(wildcards).nodes,
        "runtime": lambda wildcards: launch(wildcards).timeout_min,  # minutes
        "mem_mb": lambda wildcards: launch(wildcards).mem_gb * 1000,
        "cpus_per_task": lambda wildcards: launch(wildcards).cpus_per_task,
    }


def stage_resources(rule_name):
    """The resources the workflow config gives a stage at this scale (none if it gives none)."""
    return dict(S.get("resources", {}).get(rule_name, {}))


# The ablations: a list in the workflow config, else every variant of params/variants.yaml in its order.
ABLATION_VARIANTS = S.get("ablation_variants") or variant_names()


def variants_of(model, benchmark):
    """Test-time variants run for a (model, benchmark): the ablations on the ablation model; `default` on the
    others, and on the ablation benchmarks the model's `extra_variants`."""
    if benchmark not in S["ablation_benchmarks"]:
        return ["default"]
    if model == S["ablation_model"]:
        return ABLATION_VARIANTS
    return ["default"] + S.get("extra_variants", {}).get(model, [])


def data_ready(benchmark):
    """The data stage's output that a stage reading `benchmark` waits for."""
    return f"{ROOT}/toy/world.json" if benchmark.startswith("toy") else f"{ROOT}/.checked/{benchmark}"


def checkpoint_file(wildcards):
    """The checkpoint a model is evaluated with: trained by the pipeline, or imported from the authors'."""
    return (FINAL_CHECKPOINT if WEIGHTS == "trained" else RELEASED_CHECKPOINT).format(model=wildcards.model)


def train_data(wildcards):
    return data_ready(model_config(wildcards.model).data.train)


def has_public_gt(benchmark):
    return get_benchmark(benchmark).has_public_gt


def evaluation_targets():
    """Metrics where the ground truth is public; the server-ready results otherwise."""
    targets = []
    for model in MODELS:
        for benchmark in S["benchmarks"]:
            stage = SCORES_JSON if has_public_gt(benchmark) else VARIANTS_JSON
            targets.append(stage.format(model=model, benchmark=benchmark))
    return targets


def image_targets():
    """Image-level AP of every model on the held-out image sets (toy scale only: real LVIS needs its
    federated evaluator)."""
    return expand(f"{EVAL_IMAGES_DIR}/{layout.METRICS_FILE}", model=MODELS,
                  dataset=S.get("image_benchmarks", []))


def qualitative_targets():
    """Overlay GIFs of the ablation model on a few videos ("benchmark/video" in the config)."""
    return [f"{runs_path(layout.qualitative_dir, S['ablation_model'], *item.split('/'))}/{layout.OVERLAY_FILE}"
            for item in S.get("qualitative_videos", [])]


def diagnostics_targets():
    """`clipvis bench toy` of the ablation model and `clipvis bench iou-head` of every model (toy scale)."""
    if not S.get("diagnostics"):
        return []
    return [DIAGNOSTICS_JSON.format(model=S["ablation_model"]), *expand(IOU_HEAD_JSON, model=MODELS)]


def matching_test_targets():
    """The controlled matching test of the ablation model, if configured."""
    test = S.get("matching_test")
    if not test:
        return []
    return [f"{MATCHING_TEST_DIR}/{layout.MATCHING_TEST_FILE}".format(model=S["ablation_model"], benchmark=test["benchmark"])]


def video_frames(benchmark, video):
    """The frame folder of one video of a benchmark."""
    return get_benchmark(benchmark).image_path(ROOT) / video


def complexity_targets():
    return expand(COMPLEXITY_JSON, model=evaluated_models(S["complexity_models"]))


TABLES = expand(f"{REPORTS}/tables/table{{n}}.md", n=range(1, 7)) + [f"{REPORTS}/index.html", f"{REPORTS}/summary.json"]
