"""`clipvis segment INPUT --vocab "cat,dog"`: open-vocabulary segmentation of any video or frame folder.

Writes to --out: results.json (YTVIS records with `category_name` added; category ids are 1-based
vocabulary positions), config.yaml (the resolved config), overlay.mp4 and overlay.gif (every track scoring
at least --min-score, once, in its own colour with its class name and score beside it; small videos
enlarged) and contact_sheet.png (a few frames in a grid).
The video is read twice, once to segment and once to draw, so memory does not grow with its length.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from clipvis.commands.arguments import add_config_arguments, check_output_folder, config_from_arguments

log = logging.getLogger(__name__)

HELP = "segment a video (mp4/webm/avi or a folder of frames) with an open vocabulary; writes results and overlays"

GIF_MAX_FRAMES = 60  # the GIF shows every n-th frame so that at most this many remain
GIF_MAX_WIDTH = 640
SHEET_FRAMES = 8
SHEET_MAX_WIDTH = 480


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="video file (mp4, webm, avi, ...) or folder of JPEG/PNG frames")
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--vocab", metavar="'a,b,c'", help="comma-separated class names")
    vocab.add_argument("--vocab-file", type=Path, metavar="FILE",
                       help="one class name per line (commas inside a line separate synonyms)")
    vocab.add_argument("--benchmark", help="the vocabulary of a registered benchmark (e.g. toy_lvvis, lvvis_val)")
    parser.add_argument("--root", help="data root for --benchmark (default: $CLIPVIS_DATA, else data)")
    parser.add_argument("--checkpoint", help="trained or imported segmenter checkpoint (without it: random weights, "
                                             "for trying the command out only)")
    add_config_arguments(parser, "params YAML (default: the checkpoint's own config, else the built-in toy "
                                 "defaults)")
    parser.add_argument("--min-score", type=float, default=0.3, help="draw tracks scoring at least this (default 0.3)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")


def main(args: argparse.Namespace) -> int:
    from clipvis.commands.embed import read_vocabulary
    from clipvis.video.frames import open_frames

    from clipvis.config import save_config
    from clipvis.data.formats import write_video_results
    from clipvis.files import output_lock

    source = open_frames(args.input)
    class_names = read_vocabulary(args)
    cfg = config_from_arguments(args)
    check_output_folder(args.out)
    with output_lock(args.out):
        records = segment(source, class_names, cfg, args.checkpoint)
        write_video_results(args.out / "results.json", records)
        save_config(cfg, args.out / "config.yaml")
        write_overlays(source, records, class_names, args.min_score, args.out)
    print(args.out)
    return 0


def segment(source, class_names: list[str], cfg, checkpoint: str | None) -> list[dict]:
    """Result records of one FrameSource, each with `category_name`."""
    from tqdm import tqdm

    from clipvis.model.text_classifier import text_embeddings
    from clipvis.model.checkpoint import load_model
    from clipvis.video.inference import inference_device, segment_video

    model = load_model(cfg, checkpoint, inference_device(cfg.infer.device))
    text = text_embeddings(model.clip, class_names, cfg.clip.text_cache)
    with tqdm(total=source.length, unit="frame", desc=f"segment {source.name}") as bar:
        records = segment_video(model, source, text, cfg, video_id=1, on_frames=bar.update)
    for record in records:
        record["category_name"] = class_names[record["category_id"] - 1]
    return records


def write_overlays(source, records: list[dict], class_names: list[str], min_score: float, out_dir: Path) -> None:
    """overlay.mp4, overlay.gif and contact_sheet.png of the tracks scoring at least `min_score`."""
    from clipvis.reports import overlays

    tracks = overlays.tracks_from_results(records, dict(enumerate(class_names, start=1)), min_score)
    log.info("%d of %d tracks score at least %.2f", len(tracks), len(records), min_score)
    frame_count = len(records[0]["segmentations"])
    gif_step = -(-frame_count // GIF_MAX_FRAMES)
    sheet_indices = sorted({round(i * (frame_count - 1) / max(SHEET_FRAMES - 1, 1))
                            for i in range(SHEET_FRAMES)})
    gif_frames, sheet_frames = [], []

    def drawn_frames():
        for index, frame in enumerate(source):
            drawn = overlays.draw_tracks(frame.permute(1, 2, 0).numpy(), tracks, index)
            if index % gif_step == 0:
                gif_frames.append(overlays.thumbnail(drawn, GIF_MAX_WIDTH))
            if index in sheet_indices:
                sheet_frames.append(overlays.thumbnail(drawn, SHEET_MAX_WIDTH))
            yield drawn

    overlays.write_mp4(out_dir / "overlay.mp4", drawn_frames(), source.fps)
    overlays.write_gif(out_dir / "overlay.gif", gif_frames, source.fps / gif_step)
    overlays.write_png(out_dir / "contact_sheet.png",
                       overlays.contact_sheet(sheet_frames, [f"frame {i}" for i in sheet_indices]))
