"""`clipvis score`: video AP/AR of a result file, as the official LV-VIS, YouTube-VIS or BURST scorer computes it.

Writes two files, each atomically:

- OUT (e.g. metrics.json): ``{"flavour", "matching", "strict_matching", "gt", "results", "counts",
  "metrics"}``, where ``metrics`` holds AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm,
  ARl, APb, APn, APc, APu as fractions (null where undefined, e.g. a group with no category that has
  ground truth);
- beside it, OUT's stem + ``.per_category.csv`` (metrics.json -> metrics.per_category.csv): one row
  per category with id, name, group, partition, frequency, split, AP, AP50, num_gt, num_predictions.

Bad input files raise InputError before anything is written.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from clipvis.evaluation.video_ap import FLAVOURS

HELP = "score video results: AP/AR exactly as the official LV-VIS, YouTube-VIS or BURST scorer"

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "APb", "APn", "APc", "APu")
CSV_COLUMNS = ("id", "name", "group", "partition", "frequency", "split", "AP", "AP50", "num_gt", "num_predictions")


def add_arguments(parser) -> None:
    parser.add_argument("--gt", required=True, help="ground-truth video annotations (YTVIS-style JSON)")
    parser.add_argument("--results", required=True,
                        help="results JSON: [{video_id, category_id, score, segmentations}]")
    parser.add_argument("--flavour", choices=FLAVOURS, default="lvvis",
                        help="whose official scorer to reproduce (default: lvvis)")
    parser.add_argument("--strict-matching", action="store_true",
                        help="burst: one prediction per ground truth (the official BURST scorer lets several match)")
    parser.add_argument("--out", required=True, help="metrics JSON to write; the per-category CSV goes beside it")


def per_category_path(out: str | Path) -> Path:
    """metrics.json -> metrics.per_category.csv, in the same folder."""
    out = Path(out)
    return out.with_name(f"{out.stem}.per_category.csv")


def main(args) -> int:
    from clipvis.data.formats import load_video_gt, load_video_results
    from clipvis.evaluation.video_ap import evaluate_videos
    from clipvis.io import write_json, write_text

    gt = load_video_gt(args.gt)
    results = load_video_results(args.results, gt)
    scored = evaluate_videos(gt, results, flavour=args.flavour, strict_matching=args.strict_matching)
    report = {
        "flavour": scored.flavour,
        "matching": scored.matching,
        "strict_matching": args.strict_matching,
        "gt": str(args.gt),
        "results": str(args.results),
        "counts": {
            "videos": len(gt["videos"]),
            "categories": len(scored.category_ids),
            "categories_with_gt": sum(row["num_gt"] > 0 for row in scored.per_category),
            "gt_tracks": sum(row["num_gt"] for row in scored.per_category),
            "predictions": len(results),
        },
        "metrics": scored.metrics,
    }
    write_text(per_category_path(args.out), _csv(scored.per_category))
    write_json(args.out, report, indent=2)
    print(f"flavour {scored.flavour}; matching: {scored.matching}")
    print(_table(scored.metrics))
    print(f"wrote {args.out} and {per_category_path(args.out)}")
    return 0


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
