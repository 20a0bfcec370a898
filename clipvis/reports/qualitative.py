"""Qualitative matching comparison for the report: the same video tracked by top-K matching (the
`default` variant) and by adjacent matching (the `adjacent` variant), side by side in one GIF — the
report's counterpart of the paper's Fig. 4.

Reads runs/{scale}/{model}/infer/{benchmark}/{variant}/results.json and the benchmark's frames under the
data root; draws with clipvis.reports.overlays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from clipvis import layout
from clipvis.files import read_json
from clipvis.reports import overlays
from clipvis.reports.paper_numbers import R50_LVIS, Scale
from clipvis.reports.plots import HEATMAP_COLUMN

log = logging.getLogger(__name__)

VARIANTS = {"default": "top-K matching (ours)", "adjacent": "adjacent matching"}
MIN_SCORE = 0.3
MAX_TRACKS = 5
PANEL_WIDTH = 480  # every panel is scaled to this width
GIF_FPS = 4.0


def results_path(runs_dir: Path, scale: Scale, model: str, benchmark: str, variant: str) -> Path:
    return layout.variant_infer_dir(runs_dir, scale, model, benchmark, variant) / layout.RESULTS_FILE


def write_matching_gifs(scale: Scale, runs_dir: str | Path, data_root: str | Path, out_dir: str | Path,
                        videos: int = 2) -> list[Path]:
    """out_dir/matching_{video_id}.gif for up to `videos` videos of the LV-VIS stand-in whose tracks differ
    between the variants (else the first ones); none when either variant's results or the frames are absent."""
    from clipvis.data.registry import get_benchmark
    from clipvis.data.vocabularies import categories
    from clipvis.video.frames import image_file_frames
    from clipvis.video.benchmark import benchmark_videos

    model, benchmark = R50_LVIS[scale], get_benchmark(HEATMAP_COLUMN.benchmark_at(scale))
    paths = {variant: results_path(runs_dir, scale, model, benchmark.name, variant) for variant in VARIANTS}
    annotation_path = benchmark.annotation_path(data_root)
    if not all(path.is_file() for path in paths.values()) or not annotation_path.is_file():
        log.info("no matching comparison: needs %s and %s", " and ".join(map(str, paths.values())), annotation_path)
        return []
    records = {variant: _by_video(path) for variant, path in paths.items()}
    names = {c["id"]: c["name"] for c in categories(benchmark, data_root)}
    listed = benchmark_videos(annotation_path)
    differing = [v for v in listed if records["default"].get(v["id"]) != records["adjacent"].get(v["id"])]
    written = []
    for video in (differing or listed)[:videos]:
        tracks = {variant: overlays.tracks_from_results(records[variant].get(video["id"], []), names, MIN_SCORE)
                  [:MAX_TRACKS] for variant in VARIANTS}
        source = image_file_frames([benchmark.image_path(data_root) / name for name in video["file_names"]],
                                   video["height"], video["width"], listed_in=annotation_path)
        frames = []
        for index, frame in enumerate(source):
            image = frame.permute(1, 2, 0).numpy()  # (H, W, 3) uint8
            panels = [_to_width(overlays.draw_tracks(image, tracks[variant], index), PANEL_WIDTH)
                      for variant in VARIANTS]
            frames.append(overlays.contact_sheet(panels, list(VARIANTS.values()), columns=len(panels)))
        path = Path(out_dir) / f"matching_{video['id']}.gif"
        overlays.write_gif(path, frames, GIF_FPS)
        written.append(path)
    return written


def _to_width(image: np.ndarray, width: int) -> np.ndarray:
    """The (H, W, 3) image scaled to `width` pixels, aspect kept: pixels repeated when enlarging, bilinear when
    shrinking."""
    height, old_width = image.shape[:2]
    if old_width == width:
        return image
    resample = Image.NEAREST if width > old_width else Image.BILINEAR
    return np.asarray(Image.fromarray(image).resize((width, max(1, round(height * width / old_width))), resample))


def _by_video(path: Path) -> dict[int, list[dict]]:
    """Result records grouped by video id."""
    grouped: dict[int, list[dict]] = {}
    for record in read_json(path):
        grouped.setdefault(record["video_id"], []).append(record)
    return grouped
