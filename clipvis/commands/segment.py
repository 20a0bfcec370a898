"""`clipvis segment INPUT --vocab "cat,dog"`: open-vocabulary segmentation of any video or frame folder.

Writes to --out: results.json (YTVIS records with `category_name` added; category ids are 1-based
vocabulary positions), config.yaml (the resolved config), overlay.mp4 and overlay.gif (every track scoring
at least --min-score, once, in its own colour with its class name and score beside it; small videos
enlarged) and contact_sheet.png (a few frames in a grid).
The video is read twice, once to segment and once to draw, so memory does not grow with its length.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipvis.commands.arguments import (add_config_arguments, add_vocabulary_arguments, check_output_folder,
                                       config_from_arguments, vocabulary_from_arguments)

HELP = "segment a video (mp4/webm/avi or a folder of frames) with an open vocabulary; writes results and overlays"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="video file (mp4, webm, avi, ...) or folder of JPEG/PNG frames")
    add_vocabulary_arguments(parser)
    parser.add_argument("--checkpoint", help="trained or imported segmenter checkpoint (without it: random weights, "
                                             "for trying the command out only)")
    add_config_arguments(parser, "params YAML (default: the checkpoint's own config, else the built-in toy "
                                 "defaults)")
    parser.add_argument("--min-score", type=float, default=0.3, help="draw tracks scoring at least this (default 0.3)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")


def main(args: argparse.Namespace) -> int:
    from clipvis.config import save_config
    from clipvis.data.formats import write_video_results
    from clipvis.files import output_lock
    from clipvis.layout import CONFIG_FILE, RESULTS_FILE
    from clipvis.reports.overlays import write_video_overlays
    from clipvis.video.frames import open_frames
    from clipvis.video.segment import segment_frames

    source = open_frames(args.input)
    class_names = vocabulary_from_arguments(args)
    cfg = config_from_arguments(args)
    check_output_folder(args.out)
    with output_lock(args.out):
        records = segment_frames(source, class_names, cfg, args.checkpoint)
        write_video_results(args.out / RESULTS_FILE, records)
        save_config(cfg, args.out / CONFIG_FILE)
        write_video_overlays(source, records, class_names, args.min_score, args.out)
    print(args.out)
    return 0
