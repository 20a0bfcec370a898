"""`clipvis bench infer` and `clipvis bench memory`: speed and memory of streaming video inference.

Both use random weights (`clip.pretrained=null`) and a synthetic video (coloured shapes drifting over
a gradient, so that masks have realistic outlines), through the real pipeline (`segment_video`).

- infer: frames/s at 480x640 for the paper models (RN50, ConvNeXt-B; 100 queries, 6+6 layers) and
  a 1,196-class vocabulary (random text embeddings), on CPU and on CUDA when present, with the share
  of the time spent in each part (model, matching, classification, postprocess).
- memory: peak RSS of inference on a short and a long video, each in a fresh process; the target is
  a long-video peak within 10% of the short one.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time
from typing import Iterator

import numpy as np
import torch

log = logging.getLogger(__name__)

PAPER_CLIPS = ("RN50", "convnext_base_w_320")
LVVIS_CLASSES = 1196
MEMORY_MODEL = ["clip.model=clipvis_toy_rn", "model.hidden_dim=64", "model.mask_dim=64", "model.heads=4",
                "model.enc_layers=1", "model.dec_layers=3", "model.dec_ffn_dim=128", "model.enc_ffn_dim=128"]


def run_infer(args) -> dict:
    return bench_infer(frames=getattr(args, "infer_frames", 10), seed=getattr(args, "seed", 0))


def run_memory(args) -> dict:
    return bench_memory(seed=getattr(args, "seed", 0))


def bench_infer(frames: int = 10, height: int = 480, width: int = 640, classes: int = LVVIS_CLASSES,
                clips: tuple[str, ...] = PAPER_CLIPS, devices: tuple[str, ...] | None = None, seed: int = 0) -> dict:
    """Frames/s and time shares per CLIP model and device (one warm-up chunk first, not timed)."""
    devices = devices or (("cpu", "cuda") if torch.cuda.is_available() else ("cpu",))
    runs = []
    for clip in clips:
        for device in devices:
            cfg = _config([f"clip.model={clip}", f"infer.device={device}"])
            runs.append(_timed_run(cfg, frames, height, width, classes, seed))
            log.info("%s", runs[-1])
    return {"frames": frames, "height": height, "width": width, "classes": classes,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "runs": runs}


def bench_memory(lengths: tuple[int, ...] = (100, 1000), height: int = 240, width: int = 320,
                 queries: int = 100, classes: int = LVVIS_CLASSES, seed: int = 0) -> dict:
    """Peak RSS (MB) of streaming inference per video length, each length in a fresh Python process.

    The frames are not resized (infer.min_size = height). `output_mb` is the size of the RLE strings
    of the returned records: the output itself grows with the video, as it must.
    """
    overrides = MEMORY_MODEL + [f"model.num_queries={queries}", "infer.device=cpu", f"infer.min_size={height}"]
    runs = {}
    for length in lengths:
        arguments = json.dumps([overrides, length, height, width, classes, seed])
        child = subprocess.run([sys.executable, "-c", MEMORY_CHILD, arguments], capture_output=True, text=True)
        if child.returncode:
            raise RuntimeError(f"memory benchmark child failed:\n{child.stderr[-2000:]}")
        runs[length] = json.loads(child.stdout.strip().splitlines()[-1])
        log.info("%d frames: %s", length, runs[length])
    shortest, longest = min(lengths), max(lengths)
    growth = runs[longest]["peak_rss_mb"] / runs[shortest]["peak_rss_mb"] - 1
    return {"height": height, "width": width, "queries": queries, "classes": classes, "model": overrides,
            "runs": runs, "peak_growth": round(growth, 4), "target_growth": 0.10, "within_target": growth <= 0.10}


def _config(overrides: list[str]):
    from clipvis.config import load_config

    return load_config(None, ["clip.pretrained=null", *overrides])


def _timed_run(cfg, frames: int, height: int, width: int, classes: int, seed: int) -> dict:
    from clipvis.model.checkpoint import load_model
    from clipvis.model.checkpoint import inference_device
    from clipvis.video.inference import segment_video

    torch.manual_seed(seed)
    model = load_model(cfg, None, inference_device(cfg.infer.device))
    text = random_vocabulary(model.clip.embed_dim, classes, seed)
    segment_video(model, synthetic_frames(cfg.infer.frames_per_chunk, height, width, seed), text, cfg)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    segment_video(model, synthetic_frames(frames, height, width, seed), text, cfg, timings=timings)
    seconds = time.perf_counter() - start
    return {"clip": cfg.clip.model, "device": str(model.clip.pixel_mean.device),
            "frames_per_chunk": cfg.infer.frames_per_chunk, "fps": round(frames / seconds, 3),
            "seconds_per_frame": round(seconds / frames, 3),
            "share": {part: round(value / seconds, 4) for part, value in timings.items()}}


MEMORY_CHILD = ("import json, sys; from clipvis.bench.inference import memory_child; "
                "print(json.dumps(memory_child(*json.loads(sys.argv[1]))))")


def memory_child(overrides: list[str], length: int, height: int, width: int, classes: int, seed: int) -> dict:
    """One measured run (in its own process): segment a synthetic video, report the peak RSS."""
    from clipvis.model.checkpoint import load_model
    from clipvis.video.inference import segment_video

    cfg = _config(overrides)
    torch.manual_seed(seed)
    model = load_model(cfg, None, torch.device("cpu"))
    text = random_vocabulary(model.clip.embed_dim, classes, seed)
    before = _peak_rss_mb()
    start = time.perf_counter()
    records = segment_video(model, synthetic_frames(length, height, width, seed), text, cfg)
    output_bytes = sum(len(rle["counts"]) for record in records for rle in record["segmentations"])
    return {"frames": length, "peak_rss_mb": _peak_rss_mb(), "peak_rss_before_inference_mb": before,
            "output_mb": round(output_bytes / 2 ** 20, 1), "seconds": round(time.perf_counter() - start, 1)}


def random_vocabulary(dim: int, classes: int, seed: int):
    """Text embeddings of `classes` random unit vectors (no text encoding: it would dominate the run)."""
    from clipvis.model.text_classifier import TextEmbeddings

    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.nn.functional.normalize(torch.randn(classes, dim, generator=generator), dim=-1)
    return TextEmbeddings(embeddings, torch.arange(classes), [f"class{i}" for i in range(classes)])


def synthetic_frames(count: int, height: int, width: int, seed: int, shapes: int = 5) -> Iterator[torch.Tensor]:
    """(3, height, width) uint8 frames: a gradient with ellipses and boxes drifting across it."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack([cols / width * 120, rows / height * 120, np.full_like(rows, 60)], axis=-1)
    centre = rng.uniform([0, 0], [height, width], size=(shapes, 2))
    velocity = rng.normal(0, 3, size=(shapes, 2))
    radius = rng.uniform(0.05, 0.2, size=(shapes, 2)) * [height, width]
    colour = rng.uniform(80, 255, size=(shapes, 3))
    for t in range(count):
        frame = background.copy()
        for i in range(shapes):
            dy, dx = (rows - (centre[i, 0] + velocity[i, 0] * t) % height) / radius[i, 0], \
                (cols - (centre[i, 1] + velocity[i, 1] * t) % width) / radius[i, 1]
            inside = (np.maximum(np.abs(dy), np.abs(dx)) <= 1) if i % 2 else (dy ** 2 + dx ** 2 <= 1)  # box or ellipse
            frame[inside] = colour[i]
        yield torch.from_numpy(frame.astype(np.uint8)).permute(2, 0, 1).contiguous()


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
