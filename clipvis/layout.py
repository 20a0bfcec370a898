"""Where the pipeline's runs live, defined once for the report, the bench, the Snakemake rules and dvc.yaml.

    <runs>/<scale>/clip/toy_clip.pt, toy_clip.json                       the toy CLIP (toy scale)
    <runs>/<scale>/<model>/train/model_final.pt, checkpoint_last.pt      a trained segmenter
    <runs>/<scale>/<model>/released/model.pt                             an imported checkpoint of the authors'
    <runs>/<scale>/<model>/infer/<benchmark>/variants.json               `clipvis infer --variants`
    <runs>/<scale>/<model>/infer/<benchmark>/<variant>/results.json      ... matching.json, submission.zip
    <runs>/<scale>/<model>/score/<benchmark>/scores.json                 `clipvis score --infer-dir`
    <runs>/<scale>/<model>/score/<benchmark>/<variant>/metrics.json
    <runs>/<scale>/<model>/eval_images/<dataset>/metrics.json            `clipvis eval-images`
    <runs>/<scale>/<model>/bench/complexity.json, toy_diagnostics.json   `clipvis bench complexity`, `bench toy`
    <runs>/<scale>/<model>/bench/iou_head.json                           `clipvis bench iou-head`
    <runs>/<scale>/<model>/matching_test/<benchmark>/matching_test.json  `clipvis matching-test`
    <runs>/<scale>/<model>/qualitative/<benchmark>_<video>/overlay.gif   `clipvis segment`

`runs` is `runs` for trained models and `runs/released` for the authors' checkpoints. Arguments may be
Snakemake wildcards ("{model}"): the functions only join names.
"""

from __future__ import annotations

from pathlib import Path

RUNS = "runs"
RELEASED_RUNS = "runs/released"

CHECKPOINT_FINAL = "model_final.pt"
CHECKPOINT_LAST = "checkpoint_last.pt"
RELEASED_CHECKPOINT = "model.pt"
CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
VARIANTS_FILE = "variants.json"
MATCHING_FILE = "matching.json"
SUBMISSION_FILE = "submission.zip"
PROGRESS_DIR = "progress"
SETTINGS_FILE = "settings.json"
METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.json"
COMPLEXITY_FILE = "complexity.json"
TOY_DIAGNOSTICS_FILE = "toy_diagnostics.json"
IOU_HEAD_FILE = "iou_head.json"
MATCHING_TEST_FILE = "matching_test.json"
TOY_CLIP = "toy_clip.pt"
TEXT_CACHE = f"{RUNS}/text_embeddings"      # CLIP text embeddings, by model and vocabulary
MLFLOW_STORE = f"{RUNS}/mlflow.db"         # the default MLflow tracking store
OVERLAY_FILE = "overlay.gif"

# The folders of a model's runs (<runs>/<scale>/<model>/<folder>).
CLIP = "clip"
TRAIN = "train"
RELEASED = "released"
INFER = "infer"
SCORE = "score"
EVAL_IMAGES = "eval_images"
BENCH = "bench"
MATCHING_TEST = "matching_test"
QUALITATIVE = "qualitative"
LOGS = "logs"  # <runs>/<scale>/logs/<rule>/<wildcards>.log: the Snakemake jobs' logs


def scale_dir(runs: str | Path, scale: str) -> Path:
    return Path(runs) / scale


def logs_dir(runs: str | Path, scale: str) -> Path:
    return scale_dir(runs, scale) / LOGS


def model_dir(runs: str | Path, scale: str, model: str) -> Path:
    return scale_dir(runs, scale) / model


def clip_dir(runs: str | Path, scale: str) -> Path:
    return scale_dir(runs, scale) / CLIP


def toy_clip(runs: str | Path, scale: str) -> Path:
    return clip_dir(runs, scale) / TOY_CLIP


def train_dir(runs: str | Path, scale: str, model: str) -> Path:
    return model_dir(runs, scale, model) / TRAIN


def final_checkpoint(runs: str | Path, scale: str, model: str) -> Path:
    return train_dir(runs, scale, model) / CHECKPOINT_FINAL


def released_checkpoint(runs: str | Path, scale: str, model: str) -> Path:
    return model_dir(runs, scale, model) / RELEASED / RELEASED_CHECKPOINT


def infer_dir(runs: str | Path, scale: str, model: str, benchmark: str) -> Path:
    return model_dir(runs, scale, model) / INFER / benchmark


def variant_infer_dir(runs: str | Path, scale: str, model: str, benchmark: str, variant: str) -> Path:
    """results.json, matching.json, submission.zip of one test-time variant."""
    return infer_dir(runs, scale, model, benchmark) / variant


def score_dir(runs: str | Path, scale: str, model: str, benchmark: str) -> Path:
    return model_dir(runs, scale, model) / SCORE / benchmark


def variant_score_dir(runs: str | Path, scale: str, model: str, benchmark: str, variant: str) -> Path:
    """metrics.json of one test-time variant."""
    return score_dir(runs, scale, model, benchmark) / variant


def eval_images_dir(runs: str | Path, scale: str, model: str, dataset: str) -> Path:
    return model_dir(runs, scale, model) / EVAL_IMAGES / dataset


def bench_dir(runs: str | Path, scale: str, model: str) -> Path:
    return model_dir(runs, scale, model) / BENCH


def matching_test_dir(runs: str | Path, scale: str, model: str, benchmark: str) -> Path:
    return model_dir(runs, scale, model) / MATCHING_TEST / benchmark


def qualitative_dir(runs: str | Path, scale: str, model: str, benchmark: str, video: str) -> Path:
    return model_dir(runs, scale, model) / QUALITATIVE / f"{benchmark}_{video}"


def find(pattern: Path) -> list[Path]:
    """The files matching a path built by the functions above with "*" (or "**") for some names, sorted:
    find(eval_images_dir(runs, scale, "*", "*") / METRICS_FILE)."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if "*" in part)
    return sorted(Path(*parts[:fixed]).glob(str(Path(*parts[fixed:]))))
