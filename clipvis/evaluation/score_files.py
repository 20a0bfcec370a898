"""Scoring result files against a video ground truth, as `clipvis score` does: metrics.json and its
per-category CSV for each file, scores.json for the variants of an infer folder, and the MLflow runs.

metrics.json: ``{"flavour", "matching", "strict_matching", "gt", "results", "counts", "metrics"}``, where
``metrics`` holds AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl, APb, APn, APc, APu as
fractions (null where undefined, e.g. a group with no category that has ground truth), and ``counts`` the
videos, categories, ground-truth tracks, predictions and predictions whose score is exactly 0 (all of them:
the AP ranks them arbitrarily, and the tables say so); beside it, OUT's
stem + ``.per_category.csv``: one row per category with id, name, group, partition, frequency, split,
AP, AP50, num_gt, num_predictions.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from clipvis.config import load_config
from clipvis.data.formats import load_video_gt, load_video_results
from clipvis.errors import InputError
from clipvis.evaluation.video_ap import evaluate_videos
from clipvis.files import read_json, write_json, write_text
from clipvis.layout import CONFIG_FILE
from clipvis.tracking import shared_params, stage_run

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "APb", "APn", "APc", "APu")
CSV_COLUMNS = ("id", "name", "group", "partition", "frequency", "split", "AP", "AP50", "num_gt", "num_predictions")



def per_category_path(out: str | Path) -> Path:
    """metrics.json -> metrics.per_category.csv, in the same folder."""
    out = Path(out)
    return out.with_name(f"{out.stem}.per_category.csv")


def score_files(gt_path: Path, flavour: str, files: dict[str, tuple[Path, Path]], strict_matching: bool,
                summary: Path | None, label: str, tags: dict[str, str]) -> dict[str, dict]:
    """Score each {variant: (results file, metrics file)}; with `summary`, write every variant's headline
    metrics there (scores.json). Results that have the config `clipvis infer` saves beside them are logged
    to MLflow as the run "score <label>". Returns {variant: report (see `score_file`)}."""
    gt = load_video_gt(gt_path)
    configs = _saved_configs({name: results for name, (results, _) in files.items()})
    scored = {name: score_file(gt, gt_path, results, flavour, strict_matching, out)
              for name, (results, out) in files.items()}
    if summary is not None:
        headline = {name: {key: report["metrics"][key] for key in SUMMARY_KEYS} for name, report in scored.items()}
        write_json(summary, {"flavour": flavour, "gt": str(gt_path), "variants": headline}, indent=2)
    if configs:
        outputs = {name: out for name, (_, out) in files.items()}
        log_scores(configs, {name: report["metrics"] for name, report in scored.items()}, outputs, summary, label,
                   tags)
    return scored


def listed_variants(manifest: Path) -> list[str]:
    listed = read_json(manifest)
    variants = listed.get("variants") if isinstance(listed, dict) else None
    if not isinstance(variants, list) or not variants or not all(isinstance(name, str) for name in variants):
        raise InputError(manifest, "variants", "expected a non-empty list of variant names")
    return variants


def _saved_configs(results_paths: dict[str, Path]) -> dict | None:
    """{variant: the Config saved beside its results file (config.yaml)}, or None when one has none."""
    paths = {name: results.parent / CONFIG_FILE for name, results in results_paths.items()}
    missing = [path for path in paths.values() if not path.is_file()]
    if missing:
        log.warning("no %s: the scores are not logged to MLflow", missing[0])
        return None
    return {name: load_config(path) for name, path in paths.items()}


def log_scores(configs: dict, scored: dict[str, dict], outputs: dict[str, Path], summary: Path | None,
               label: str, tags: dict[str, str]) -> None:
    """The MLflow run "score <label>". Without `summary` (one results file), it holds the config, the
    metrics and their files; with it (scores.json of several variants), the params the variants share and
    the summary, and each variant gets a nested run with its config, metrics and files."""
    first = next(iter(configs.values()))
    with stage_run(first, "score", run_name=f"score {label}", params=shared_params(list(configs.values())),
                   tags=tags) as mlflow:
        if summary is None:
            _log_metrics(mlflow, scored[""], outputs[""])
        else:
            mlflow.log_artifact(str(summary))
            for name, cfg in configs.items():
                with stage_run(cfg, "score", run_name=name, nested=True, tags=tags | {"variant": name}) as child:
                    _log_metrics(child, scored[name], outputs[name])


def _log_metrics(mlflow, metrics: dict, out: Path) -> None:
    """The defined metrics (a group without ground truth has None), metrics.json and its per-category CSV."""
    mlflow.log_metrics({key: value for key, value in metrics.items() if value is not None})
    mlflow.log_artifact(str(out))
    mlflow.log_artifact(str(per_category_path(out)))


def score_file(gt: dict, gt_path, results_path, flavour: str, strict_matching: bool, out) -> dict:
    """Score one results file against loaded ground truth; write the metrics JSON and CSV; return the report
    written (flavour, matching, counts, metrics)."""
    results = load_video_results(results_path, gt)
    scored = evaluate_videos(gt, results, flavour=flavour, strict_matching=strict_matching)
    report = {
        "flavour": scored.flavour,
        "matching": scored.matching,
        "strict_matching": strict_matching,
        "gt": str(gt_path),
        "results": str(results_path),
        "counts": {
            "videos": len(gt["videos"]),
            "categories": len(scored.category_ids),
            "categories_with_gt": sum(row["num_gt"] > 0 for row in scored.per_category),
            "gt_tracks": sum(row["num_gt"] for row in scored.per_category),
            "predictions": len(results),
            "predictions_scored_zero": sum(result["score"] == 0 for result in results),
        },
        "metrics": scored.metrics,
    }
    write_text(per_category_path(out), _csv(scored.per_category))
    write_json(out, report, indent=2)
    return report


def _csv(rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in CSV_COLUMNS})
    return text.getvalue()


def metrics_table(metrics: dict) -> str:
    """Two aligned lines: metric names, then values as fractions ('-' where undefined)."""
    cells = [(key, "-" if metrics[key] is None else f"{metrics[key]:.4f}") for key in SUMMARY_KEYS]
    return "\n".join(" ".join(f"{cell[i]:>7}" for cell in cells) for i in (0, 1))
