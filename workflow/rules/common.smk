# Targets and lookups shared by the rules (configuration only; no stage logic).

from clipvis.config import load_config, variant_names
from clipvis.data.registry import get_benchmark
from clipvis.data.released import RELEASED_BY_MODEL


def evaluated_models(models):
    """The models evaluated: all of them, or with weights=released those the authors released."""
    return [m for m in models if WEIGHTS == "trained" or m in RELEASED_BY_MODEL]


MODELS = evaluated_models(S["models"])


def params_file(model):
    return f"{S['params_dir']}/{model}.yaml"


# The ablations: a list in the workflow config, else every variant of params/variants.yaml in its order.
ABLATION_VARIANTS = S.get("ablation_variants") or variant_names()


def variants_of(model, benchmark):
    """Test-time variants run for a (model, benchmark): the ablations on the ablation model."""
    if model == S["ablation_model"] and benchmark in S["ablation_benchmarks"]:
        return ABLATION_VARIANTS
    return ["default"]


def data_ready(benchmark):
    """The data stage's output that a stage reading `benchmark` waits for."""
    return f"{ROOT}/toy/world.json" if benchmark.startswith("toy") else f"{ROOT}/.checked/{benchmark}"


def checkpoint_file(wildcards):
    """The checkpoint a model is evaluated with: trained by the pipeline, or imported from the authors'."""
    stage = "train/model_final.pt" if WEIGHTS == "trained" else "released/model.pt"
    return f"{RUNS}/{wildcards.model}/{stage}"


def train_data(wildcards):
    return data_ready(load_config(params_file(wildcards.model)).data.train)


def has_public_gt(benchmark):
    return get_benchmark(benchmark).has_public_gt


def evaluation_targets():
    """Metrics where the ground truth is public; the server-ready results otherwise."""
    targets = []
    for model in MODELS:
        for benchmark in S["benchmarks"]:
            stage = "score/{}/scores.json" if has_public_gt(benchmark) else "infer/{}/variants.json"
            targets.append(f"{RUNS}/{model}/" + stage.format(benchmark))
    return targets


def image_targets():
    """Image-level AP of every model on the held-out image sets (toy scale only: real LVIS needs its
    federated evaluator)."""
    return expand(f"{RUNS}/{{model}}/eval_images/{{dataset}}/metrics.json", model=MODELS,
                  dataset=S.get("image_benchmarks", []))


def qualitative_targets():
    """Overlay GIFs of the ablation model on a few videos ("benchmark/video" in the config)."""
    return [f"{RUNS}/{S['ablation_model']}/qualitative/{item.replace('/', '_')}/overlay.gif"
            for item in S.get("qualitative_videos", [])]


def diagnostics_targets():
    """`clipvis bench toy` of the ablation model (toy scale)."""
    return [f"{RUNS}/{S['ablation_model']}/bench/toy_diagnostics.json"] if S.get("diagnostics") else []


def matching_test_targets():
    """The controlled matching test of the ablation model, if configured."""
    test = S.get("matching_test")
    return [f"{RUNS}/{S['ablation_model']}/matching_test/{test['benchmark']}/matching_test.json"] if test else []


def video_frames(benchmark, video):
    """The frame folder of one video of a benchmark."""
    return get_benchmark(benchmark).image_path(ROOT) / video


def complexity_targets():
    return expand(f"{RUNS}/{{model}}/bench/complexity.json", model=evaluated_models(S["complexity_models"]))


TABLES = expand(f"{REPORTS}/tables/table{{n}}.md", n=range(1, 7)) + [f"{REPORTS}/index.html", f"{REPORTS}/summary.json"]
