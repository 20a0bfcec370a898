"""`clipvis tables --scale toy|paper`: Tables I–VI (ours / paper) as Markdown, LaTeX and HTML, the figures,
and OUT/index.html, all read from the run files under --runs (and the MLflow store for training curves).
OUT/summary.json lists every measured cell (and the image-level AP of `clipvis eval-images`, the toy CLIP's
accuracy, the toy diagnostics and the matching test) flat, for `dvc metrics` / `dvc exp show`."""

from __future__ import annotations

from pathlib import Path

from clipvis.layout import RUNS

HELP = "write Tables I-VI (ours beside the paper's), the figures and index.html from the run files"


def add_arguments(parser) -> None:
    parser.add_argument("--scale", choices=["toy", "paper"], default="toy", help="which runs to report (default: toy)")
    parser.add_argument("--runs", default=RUNS, help=f"runs folder: RUNS/{{scale}}/{{model}}/... (default: {RUNS})")
    parser.add_argument("--out", default="reports", help="report folder (default: reports)")
    parser.add_argument("--data", help="data root with the benchmarks' frames, for the matching GIFs (default: "
                                       "$CLIPVIS_DATA, else the config's default data.root)")
    parser.add_argument("--samples", help="toy-world sample sheet to show (default at toy scale: the one "
                                          "`clipvis data` writes, reports/toy_world_samples.png)")


def main(args) -> int:
    from clipvis.data.registry import resolve_root
    from clipvis.toy.samples import DEFAULT_SAMPLES_PATH
    from clipvis.files import write_json
    from clipvis.reports.clip_results import clip_reports, clip_values
    from clipvis.reports.diagnostics_results import diagnostics, diagnostics_values
    from clipvis.reports.html import write_report
    from clipvis.reports.image_results import image_metrics, image_values
    from clipvis.reports.iou_head_results import iou_head_values, iou_heads
    from clipvis.reports.matching_results import matching_tests, matching_values
    from clipvis.reports.tables import build_tables, measured_values

    samples = args.samples or (DEFAULT_SAMPLES_PATH if args.scale == "toy" else None)
    data_root = resolve_root(args.data)
    report = write_report(args.scale, args.runs, args.out, data_root, samples=samples)
    summary = Path(args.out) / "summary.json"
    values = (measured_values(build_tables(args.scale, args.runs)) | image_values(image_metrics(args.scale, args.runs))
              | clip_values(clip_reports(args.scale, args.runs))
              | diagnostics_values(diagnostics(args.scale, args.runs))
              | iou_head_values(iou_heads(args.scale, args.runs))
              | matching_values(matching_tests(args.scale, args.runs)))
    write_json(summary, values, indent=1)
    for path in [*report.tables, *report.images, report.index, summary]:
        print(path)
    return 0
