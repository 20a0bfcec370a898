"""`clipvis score`: video AP/AR of a result file, as the official LV-VIS, YouTube-VIS or BURST scorer computes it.

Writes two files, each atomically:

- OUT (e.g. metrics.json): ``{"flavour", "matching", "strict_matching", "gt", "results", "counts",
  "metrics"}``, where ``metrics`` holds AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm,
  ARl, APb, APn, APc, APu as fractions (null where undefined, e.g. a group with no category that has
  ground truth);
- beside it, OUT's stem + ``.per_category.csv`` (metrics.json -> metrics.per_category.csv): one row
  per category with id, name, group, partition, frequency, split, AP, AP50, num_gt, num_predictions.

With `--benchmark` the ground truth and the flavour come from the benchmark registry. With
`--infer-dir DIR` (what `clipvis infer --variants ...` wrote), every variant listed in
DIR/variants.json is scored into OUT/<variant>/metrics.json, and OUT/scores.json (each variant's
headline metrics) is written last.

MLflow: when the results come with the config that made them (config.yaml beside results.json, as
`clipvis infer` writes it), the scores are logged as a run "score <benchmark>" (stage score) in that
config's experiment. With --infer-dir, that run holds the params all variants share and scores.json,
and each variant gets a nested run (tags variant, benchmark) with its whole config, its metrics and its
metrics files; with --results, the one run holds all of these.

Bad input files raise InputError before anything is written.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from clipvis.commands.arguments import check_output_file, check_output_folder
from clipvis.errors import InputError
from clipvis.evaluation.video_ap import FLAVOURS
from clipvis.files import output_lock

log = logging.getLogger(__name__)

HELP = "score video results: AP/AR exactly as the official LV-VIS, YouTube-VIS or BURST scorer"

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "APb", "APn", "APc", "APu")
CSV_COLUMNS = ("id", "name", "group", "partition", "frequency", "split", "AP", "AP50", "num_gt", "num_predictions")


def add_arguments(parser) -> None:
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt", help="ground-truth video annotations (YTVIS-style JSON)")
    truth.add_argument("--benchmark", help="a registered benchmark: its ground truth and scorer flavour")
    parser.add_argument("--root", help="data root for --benchmark (default: $CLIPVIS_DATA or data)")
    found = parser.add_mutually_exclusive_group(required=True)
    found.add_argument("--results", help="results JSON: [{video_id, category_id, score, segmentations}]")
    found.add_argument("--infer-dir", help="an infer output folder: score every variant in its variants.json")
    parser.add_argument("--flavour", choices=FLAVOURS,
                        help="whose official scorer to reproduce (default: the benchmark's, else lvvis)")
    parser.add_argument("--strict-matching", action="store_true",
                        help="burst: one prediction per ground truth (the official BURST scorer lets several match)")
    parser.add_argument("--out", required=True,
                        help="metrics JSON to write (the per-category CSV goes beside it); a folder with --infer-dir")


def per_category_path(out: str | Path) -> Path:
    """metrics.json -> metrics.per_category.csv, in the same folder."""
    out = Path(out)
    return out.with_name(f"{out.stem}.per_category.csv")


def main(args) -> int:
    gt_path, flavour = _truth(args)
    if args.results:  # one results file: the variant "" (no nested runs)
        files = {"": (Path(args.results), Path(args.out))}
    else:
        check_output_folder(args.out)
        files = {name: (Path(args.infer_dir) / name / "results.json", Path(args.out) / name / "metrics.json")
                 for name in _listed_variants(Path(args.infer_dir) / "variants.json")}
    for results, out in files.values():  # before anything is read or written
        check_output_file(out, [results, gt_path])
        check_output_file(per_category_path(out), [results, gt_path])
    with output_lock(args.out):
        return _score(args, gt_path, flavour, files)


def _score(args, gt_path: Path, flavour: str, files: dict[str, tuple[Path, Path]]) -> int:
    from clipvis.data.formats import load_video_gt
    from clipvis.files import write_json

    gt = load_video_gt(gt_path)
    configs = _saved_configs({name: results for name, (results, _) in files.items()})
    scored = {name: score_file(gt, gt_path, results, flavour, args.strict_matching, out)
              for name, (results, out) in files.items()}
    summary = None
    if args.infer_dir:
        summary = Path(args.out) / "scores.json"
        headline = {name: {key: metrics[key] for key in SUMMARY_KEYS} for name, metrics in scored.items()}
        write_json(summary, {"flavour": flavour, "gt": str(gt_path), "variants": headline}, indent=2)
    if configs:
        tags = {"flavour": flavour} | ({"benchmark": args.benchmark} if args.benchmark else {})
        outputs = {name: out for name, (_, out) in files.items()}
        log_scores(configs, scored, outputs, summary, args.benchmark or gt_path.name, tags)
    return 0


def _listed_variants(manifest: Path) -> list[str]:
    from clipvis.files import read_json

    listed = read_json(manifest)
    variants = listed.get("variants") if isinstance(listed, dict) else None
    if not isinstance(variants, list) or not variants or not all(isinstance(name, str) for name in variants):
        raise InputError(manifest, "variants", "expected a non-empty list of variant names")
    return variants


def _saved_configs(results_paths: dict[str, Path]) -> dict | None:
    """{variant: the Config saved beside its results file (config.yaml)}, or None when one has none."""
    from clipvis.config import load_config

    paths = {name: results.parent / "config.yaml" for name, results in results_paths.items()}
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
    from clipvis.tracking import shared_params, stage_run

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


def _truth(args) -> tuple[Path, str]:
    """The ground-truth file and the scorer flavour, from --gt/--flavour or the benchmark registry."""
    if args.gt:
        return Path(args.gt), args.flavour or "lvvis"
    from clipvis.data.registry import get_benchmark, resolve_root

    benchmark = get_benchmark(args.benchmark)
    if not benchmark.has_public_gt or benchmark.scorer is None:
        raise InputError("--benchmark", args.benchmark,
                         f"has no public ground truth; submit its results to {benchmark.server}")
    return benchmark.annotation_path(resolve_root(args.root)), args.flavour or benchmark.scorer


def score_file(gt: dict, gt_path, results_path, flavour: str, strict_matching: bool, out) -> dict:
    """Score one results file against loaded ground truth; write the metrics JSON and CSV; return the metrics."""
    from clipvis.data.formats import load_video_results
    from clipvis.evaluation.video_ap import evaluate_videos
    from clipvis.files import write_json, write_text

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
        },
        "metrics": scored.metrics,
    }
    write_text(per_category_path(out), _csv(scored.per_category))
    write_json(out, report, indent=2)
    print(f"{results_path}: flavour {scored.flavour}; matching: {scored.matching}")
    print(_table(scored.metrics))
    print(f"wrote {out} and {per_category_path(out)}")
    return scored.metrics


def _csv(rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in CSV_COLUMNS})
    return text.getvalue()


def _table(metrics: dict) -> str:
    """Two aligned lines: metric names, then values as fractions ('-' where undefined)."""
    cells = [(key, "-" if metrics[key] is None else f"{metrics[key]:.4f}") for key in SUMMARY_KEYS]
    return "\n".join(" ".join(f"{cell[i]:>7}" for cell in cells) for i in (0, 1))
