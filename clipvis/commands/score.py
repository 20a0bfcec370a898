"""`clipvis score`: video AP/AR of a result file, as the official LV-VIS, YouTube-VIS or BURST scorer computes it
(`clipvis.evaluation.score_files` says what is written).

With `--benchmark` the ground truth and the flavour come from the benchmark registry. With
`--infer-dir DIR` (what `clipvis infer --variants ...` wrote), every variant listed in
DIR/variants.json is scored into OUT/<variant>/metrics.json, and OUT/scores.json (each variant's
headline metrics) is written last. Bad input files raise InputError before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from clipvis.commands.arguments import check_output_file, check_output_folder
from clipvis.errors import InputError
from clipvis.evaluation.score_files import listed_variants, metrics_table, per_category_path, score_files
from clipvis.evaluation.video_ap import FLAVOURS
from clipvis.files import output_lock
from clipvis.layout import METRICS_FILE, RESULTS_FILE, SCORES_FILE, VARIANTS_FILE

HELP = "score video results: AP/AR exactly as the official LV-VIS, YouTube-VIS or BURST scorer"

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


def main(args) -> int:
    gt_path, flavour = _truth(args)
    if args.results:  # one results file: the variant "" (no nested runs)
        files = {"": (Path(args.results), Path(args.out))}
    else:
        check_output_folder(args.out)
        files = {name: (Path(args.infer_dir) / name / RESULTS_FILE, Path(args.out) / name / METRICS_FILE)
                 for name in listed_variants(Path(args.infer_dir) / VARIANTS_FILE)}
    for results, out in files.values():  # before anything is read or written
        check_output_file(out, [results, gt_path])
        check_output_file(per_category_path(out), [results, gt_path])
    summary = Path(args.out) / SCORES_FILE if args.infer_dir else None
    tags = {"flavour": flavour} | ({"benchmark": args.benchmark} if args.benchmark else {})
    with output_lock(args.out):
        scored = score_files(gt_path, flavour, files, args.strict_matching, summary, args.benchmark or gt_path.name,
                             tags)
    for name, report in scored.items():
        print(f"{report['results']}: flavour {report['flavour']}; matching: {report['matching']}")
        print(metrics_table(report["metrics"]))
    print(f"wrote {', '.join(str(out) for _, out in files.values())}" + (f" and {summary}" if summary else ""))
    return 0


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


