"""`clipvis eval-images`: image-level mask AP of a checkpoint on held-out images (what it writes:
`clipvis.evaluation.images`)."""

from __future__ import annotations

from pathlib import Path

from clipvis.commands.arguments import add_config_arguments, check_output_folder, config_from_arguments

DEFAULT_DATASET = "toy_lvis_val"

HELP = "image-level mask AP (AP, AP50, AP75, APb, APn) of a checkpoint on held-out images"

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APb", "APn")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="trained or imported segmenter checkpoint (.pt)")
    add_config_arguments(parser, "params YAML (default: the checkpoint's own config)")
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help=f"registered image benchmark with ground truth (default: {DEFAULT_DATASET})")
    parser.add_argument("--root", help="data root (default: $CLIPVIS_DATA, else the config's data.root)")
    parser.add_argument("--out", required=True, help="output folder (results.json, metrics.json, config.yaml)")


def main(args) -> int:
    from clipvis.evaluation.images import evaluate_images
    from clipvis.files import output_lock
    from clipvis.layout import METRICS_FILE, RESULTS_FILE

    cfg = config_from_arguments(args)
    check_output_folder(args.out)
    with output_lock(args.out):
        report = evaluate_images(cfg, args.dataset, args.checkpoint, args.out, root=args.root)
    metrics = report["metrics"]
    print("  ".join(f"{key} {'-' if metrics[key] is None else f'{metrics[key]:.4f}'}" for key in SUMMARY_KEYS))
    print(f"wrote {Path(args.out) / RESULTS_FILE} and {Path(args.out) / METRICS_FILE}")
    return 0
