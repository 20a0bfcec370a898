"""`clipvis bench score`: time the video AP scorer on an LV-VIS-sized synthetic problem held in memory.

Each video has 1-8 ground-truth tracks (ellipses of 10-220 px radii drifting across the frames, some
present only on part of the video, categories drawn from 1-3 classes per video) and `per_video`
predictions on every frame: two jittered copies of each track with its category, one with another
category, and random ellipses. Only `evaluate_videos` is timed.
"""

from __future__ import annotations

import logging
import os
import resource
import time

import numpy as np
import pycocotools.mask as mask_api

from clipvis.evaluation.video_ap import coco_rle_areas, evaluate_videos

log = logging.getLogger(__name__)


def run(args) -> dict:
    return bench_score(args.videos, args.categories, args.per_video, args.frames, args.height, args.width, args.seed)


def bench_score(videos: int = 837, categories: int = 1196, per_video: int = 50, frames: int = 30,
                height: int = 720, width: int = 1280, seed: int = 0) -> dict:
    start = time.perf_counter()
    gt, results = synthetic_problem(videos, categories, per_video, frames, height, width, seed)
    generated = time.perf_counter() - start
    rss_before = _current_rss_mb()
    log.info("generated %d tracks and %d predictions in %.1f s; scoring", len(gt["annotations"]), len(results),
             generated)
    start = time.perf_counter()
    scored = evaluate_videos(gt, results, flavour="lvvis")
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_scoring_mb": rss_before,
        "generate_seconds": round(generated, 1),
        "videos": videos, "categories": categories, "gt_tracks": len(gt["annotations"]),
        "predictions": len(results), "frames": frames, "height": height, "width": width,
        "cpu_count": os.cpu_count(), "AP": scored.metrics["AP"],
    }


def synthetic_problem(videos: int, categories: int, per_video: int, frames: int, height: int, width: int,
                      seed: int) -> tuple[dict, list[dict]]:
    """(ground truth, results) in the in-memory form of `clipvis.data.formats`, ids 1..N."""
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "annotations": [],
          "categories": [{"id": k + 1, "name": f"class{k + 1}", "partition": int(k * 4 // categories)}
                         for k in range(categories)]}
    results = []
    for video_id in range(1, videos + 1):
        gt["videos"].append({"id": video_id, "width": width, "height": height, "length": frames,
                             "file_names": [f"{video_id}/{t:05d}.jpg" for t in range(frames)]})
        classes = rng.integers(1, categories + 1, size=rng.integers(1, 4))
        n_tracks = int(rng.integers(1, 9))
        track_class = rng.choice(classes, size=n_tracks)
        centre = rng.uniform([0, 0], [width, height], size=(n_tracks, 2))  # [tracks, (x, y)]
        velocity = rng.normal(0, 5, size=(n_tracks, 2))
        radii = rng.uniform(10, 220, size=(n_tracks, 2))

        # Predictions: copies of tracks (jittered), then random ellipses.
        source = np.concatenate([np.repeat(np.arange(n_tracks), 3), np.full(per_video, -1)])[:per_video]
        copied = source >= 0
        pred_class = np.where(copied, track_class[np.maximum(source, 0)], rng.choice(classes, size=per_video))
        wrong = copied & (np.arange(per_video) % 3 == 2)
        pred_class[wrong] = rng.integers(1, categories + 1, size=wrong.sum())
        random_class = ~copied & (rng.random(per_video) < 0.5)
        pred_class[random_class] = rng.integers(1, categories + 1, size=random_class.sum())
        pred_centre = np.where(copied[:, None], centre[np.maximum(source, 0)],
                               rng.uniform([0, 0], [width, height], size=(per_video, 2)))
        pred_centre += rng.normal(0, 4, size=(per_video, 2))
        pred_velocity = np.where(copied[:, None], velocity[np.maximum(source, 0)], rng.normal(0, 5, (per_video, 2)))
        pred_radii = np.where(copied[:, None], radii[np.maximum(source, 0)] * rng.uniform(0.85, 1.15, (per_video, 2)),
                              rng.uniform(10, 220, size=(per_video, 2)))

        all_centre = np.concatenate([centre, pred_centre])
        all_velocity = np.concatenate([velocity, pred_velocity])
        all_radii = np.concatenate([radii, pred_radii])
        t = np.arange(frames)[None, :, None]
        path = np.clip(all_centre[:, None] + all_velocity[:, None] * t, 0, [width - 1, height - 1])  # [E, F, 2]
        masks = _ellipse_rles(path.reshape(-1, 2), np.repeat(all_radii, frames, axis=0), height, width)
        masks = [masks[i * frames:(i + 1) * frames] for i in range(n_tracks + per_video)]

        for i in range(n_tracks):
            first, last = sorted(rng.integers(0, frames, size=2)) if rng.random() < 0.3 else (0, frames - 1)
            track = [m if first <= f <= last else None for f, m in enumerate(masks[i])]
            present = [m for m in track if m is not None]
            areas = iter(coco_rle_areas(present).tolist())
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "video_id": video_id, "category_id": int(track_class[i]),
                "iscrowd": 0, "segmentations": track, "areas": [None if m is None else next(areas) for m in track]})
        for j in range(per_video):
            results.append({"video_id": video_id, "category_id": int(pred_class[j]), "score": float(rng.random()),
                            "segmentations": masks[n_tracks + j]})
    return gt, results


def _ellipse_rles(centre: np.ndarray, radii: np.ndarray, height: int, width: int) -> list[dict]:
    """Compressed RLEs of filled axis-aligned ellipses (centres inside the frame, radii >= 1) [E].

    Each column of an ellipse is one run of ones, so the column-major run lengths are built directly:
    zeros before the first column's run, then (ones, zeros up to the next column's run) per column.
    """
    x0 = np.clip(np.ceil(centre[:, 0] - radii[:, 0]), 0, width - 1).astype(np.int64)
    x1 = np.clip(np.floor(centre[:, 0] + radii[:, 0]), x0, width - 1).astype(np.int64)
    n_columns = x1 - x0 + 1
    owner = np.repeat(np.arange(len(centre)), n_columns)  # [C] ellipse of each column
    x = x0[owner] + np.arange(n_columns.sum()) - np.repeat(np.cumsum(n_columns) - n_columns, n_columns)
    half = radii[owner, 1] * np.sqrt(np.clip(1 - ((x - centre[owner, 0]) / radii[owner, 0]) ** 2, 0, 1))
    top = np.clip(np.round(centre[owner, 1] - half), 0, height - 1).astype(np.int64)
    bottom = np.clip(np.round(centre[owner, 1] + half), top, height - 1).astype(np.int64)

    lengths = 2 * n_columns + 1
    first = np.cumsum(lengths) - lengths  # [E] where each ellipse's counts start
    counts = np.empty(lengths.sum(), dtype=np.int64)
    column_slot = np.repeat(first, n_columns) + 1 + 2 * (x - x0[owner])  # the ones-run of each column
    counts[column_slot] = bottom - top + 1
    gap = (height - 1 - bottom)  # zeros below each column's run
    counts[column_slot + 1] = gap + np.append(top[1:], 0)  # + zeros above the next column's run
    last_column = np.cumsum(n_columns) - 1
    counts[first] = x0 * height + top[last_column - n_columns + 1]
    counts[first + lengths - 1] = gap[last_column] + (width - 1 - x1) * height
    pieces = np.split(counts, np.cumsum(lengths)[:-1])
    encoded = mask_api.frPyObjects([{"size": [height, width], "counts": c} for c in pieces], height, width)
    return [{"size": [height, width], "counts": e["counts"].decode("ascii")} for e in encoded]


def _current_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
