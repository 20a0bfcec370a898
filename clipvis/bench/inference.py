"""`clipvis bench infer` and `clipvis bench memory`: speed and memory of streaming video inference.

Both use random weights (`clip.pretrained=null`) and a synthetic video (coloured shapes drifting over
a gradient, so that masks have realistic outlines), through the real pipeline (`segment_video`).

- infer: for each paper CLIP (RN50, ConvNeXt-B; 100 queries, 6+6 layers), precision (fp32, bf16), chunk
  size and mode (eager; compiled with `infer.compile`; eager_blas, float32 linear layers through PyTorch's
  BLAS rather than oneDNN, `infer.onednn_linear=false`), at 480x640 with a 1,196-class vocabulary
  (random text embeddings): seconds per frame of streaming inference and, alternating with it in the
  same process, of the network alone (network and classification, frame by frame), their ratio, and
  where the streaming time goes (trunk, pixel decoder, deformable core, query decoder, classification,
  matching, post-processing with its upsampling, RLE and temporary-file parts; a compiled network is
  timed as a whole); the warm-up pass (which compiles); how bf16 and compiling change the detections.
- memory: peak RSS of inference on a short and a long video, each in a fresh process; the target is
  a long-video peak within 10% of the short one. `--scale paper` runs the paper's RN50 model on
  480x640 frames, `narrow` (default, quick) a narrowed model on 240x320 frames.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import numpy as np
import pycocotools.mask as mask_api
import torch

from clipvis.errors import InputError

log = logging.getLogger(__name__)

PAPER_CLIPS = ("RN50", "convnext_base_w_320")
LVVIS_CLASSES = 1196
PAPER_PARAMS = "params/paper/base.yaml"  # the paper's architecture and test-time settings (run from the repository root)
NARROW_MODEL = ["clip.model=clipvis_toy_rn", "model.hidden_dim=64", "model.mask_dim=64", "model.heads=4",
                "model.enc_layers=1", "model.dec_layers=3", "model.dec_ffn_dim=128", "model.enc_ffn_dim=128"]
MEMORY_SCALES = {"narrow": (NARROW_MODEL, 240, 320), "paper": (["clip.model=RN50"], 480, 640)}
STREAMING_PARTS = ("resize", "model", "classification", "matching", "postprocess")  # disjoint, in order
PEAK_TARGET_MB = 2048
MODEL_SEED_TRIES = 20
GROWTH_TARGET = 0.10
# The network without and with `infer.compile`, and eager with PyTorch's own BLAS for float32 linear layers
# (`infer.onednn_linear=false`).
MODES = ("eager", "compiled", "eager_blas")


def run_infer(args) -> dict:
    return bench_infer(frames=args.infer_frames, clips=tuple(args.clips.split(",")),
                       precisions=tuple(args.precisions.split(",")), chunks=tuple(int(c) for c in args.chunks.split(",")),
                       modes=tuple(args.modes.split(",")), repeats=args.repeats, seed=args.seed)


def run_memory(args) -> dict:
    lengths = tuple(int(n) for n in args.lengths.split(","))
    return bench_memory(scale=args.scale, lengths=lengths, seed=args.seed)


def bench_infer(frames: int = 10, height: int = 480, width: int = 640, classes: int = LVVIS_CLASSES,
                clips: tuple[str, ...] = PAPER_CLIPS, precisions: tuple[str, ...] = ("fp32", "bf16"),
                chunks: tuple[int, ...] = (10,), modes: tuple[str, ...] = ("eager",), repeats: int = 2,
                devices: tuple[str, ...] | None = None, seed: int = 0) -> dict:
    """Per CLIP, device, precision, chunk size and mode ("eager", "compiled"): streaming and network-only
    seconds per frame (the minimum over `repeats` alternating rounds, after a warm-up), their ratio and
    the streaming time's parts; same-run ratios between precisions, chunk sizes and modes; the effect of
    bf16 and of compiling on the detections."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise InputError("--modes", ",".join(sorted(unknown)), f"unknown mode; choose from {', '.join(MODES)}")
    devices = devices or (("cpu", "cuda") if torch.cuda.is_available() else ("cpu",))
    runs, ratios, detections = [], {}, {}
    for clip in clips:
        for device in devices:
            measured = _measure_clip(clip, device, frames, height, width, classes, precisions, chunks, modes,
                                     repeats, seed)
            runs += measured["runs"]
            ratios.update(measured["ratios"])
            detections.update({f"{clip} {device} {name}": value for name, value in measured["detections"].items()})
    return {"frames": frames, "frame_size": [height, width], "classes": classes, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(), "repeats": repeats,
            "seconds": "per frame, the minimum over repeats", "runs": runs, "ratios": ratios,
            "detections_kept": detections}


def _measure_clip(clip: str, device: str, frames: int, height: int, width: int, classes: int,
                  precisions: tuple[str, ...], chunks: tuple[int, ...], modes: tuple[str, ...], repeats: int,
                  seed: int) -> dict:
    from clipvis.heap import keep_freed_memory
    from clipvis.model.checkpoint import inference_device

    keep_freed_memory()
    settings = [(precision, chunk, mode) for precision in precisions for chunk in chunks for mode in modes]
    configs = {s: _config([f"clip.model={clip}", f"infer.device={device}", f"infer.precision={s[0]}",
                           f"infer.frames_per_chunk={s[1]}", f"infer.compile={s[2] == 'compiled'}",
                           f"infer.onednn_linear={s[2] != 'eager_blas'}"])
               for s in settings}
    model, model_seed = random_weight_model(configs[settings[0]], inference_device(device), seed, height, width)
    text = random_vocabulary(model.clip.embed_dim, classes, seed)
    video = list(synthetic_frames(frames, height, width, seed))
    best: dict[tuple, dict[str, float]] = {s: {} for s in settings}
    records, warmup = {}, {}
    for repeat in range(repeats + 1):  # the first round warms up (and compiles)
        for setting in settings:
            start = time.perf_counter()
            times, records[setting] = _timed_pass(model, video, text, configs[setting])
            if repeat:
                best[setting] = {k: min(v, best[setting].get(k, float("inf"))) for k, v in times.items()}
            else:
                warmup[setting] = time.perf_counter() - start
    runs, per_frame = [], {}
    for (precision, chunk, mode), times in best.items():
        per_frame[precision, chunk, mode] = {k: v / frames for k, v in times.items()}
        stages = per_frame[precision, chunk, mode]
        runs.append({"clip": clip, "device": device, "model_seed": model_seed, "precision": precision,
                     "frames_per_chunk": chunk, "mode": mode,
                     "streaming_s": round(stages["streaming"], 4), "network_only_s": round(stages["network_only"], 4),
                     "streaming_over_network": round(stages["streaming"] / stages["network_only"], 3),
                     "fps": round(1 / stages["streaming"], 3),
                     "warmup_pass_s": round(warmup[precision, chunk, mode], 1),
                     "stages_s": {k: round(v, 4) for k, v in stages.items() if k not in ("streaming", "network_only")}})
        log.info("%s", runs[-1])
    ratios = {}
    for precision, chunk, mode in settings:
        setting = per_frame[precision, chunk, mode]
        if precision != "fp32" and ("fp32", chunk, mode) in per_frame:
            key = f"{clip} {device} {mode} chunk {chunk}: {precision}/fp32"
            ratios[key] = _ratio(setting, per_frame["fp32", chunk, mode])
        if chunk != chunks[0]:
            key = f"{clip} {device} {mode} {precision}: chunk {chunk}/chunk {chunks[0]}"
            ratios[key] = _ratio(setting, per_frame[precision, chunks[0], mode])
        if mode != modes[0]:
            key = f"{clip} {device} {precision} chunk {chunk}: {mode}/{modes[0]}"
            ratios[key] = _ratio(setting, per_frame[precision, chunk, modes[0]])
    reference = ("fp32", chunks[0], modes[0])  # every other setting's detections against these
    detections = {}
    if reference in records:
        for precision, chunk, mode in settings:
            if chunk == chunks[0] and (precision, chunk, mode) != reference:
                detections[f"{precision} {mode} vs fp32 {modes[0]}"] = compare_detections(
                    records[reference], records[precision, chunk, mode])
    return {"runs": runs, "ratios": ratios, "detections": detections}


def _ratio(times: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {k: round(times[k] / base[k], 3) for k in ("streaming", "network_only")}


def _timed_pass(model, video: list[torch.Tensor], text, cfg) -> tuple[dict[str, float], list[dict]]:
    """Seconds of one streaming pass over the video (with its parts) and of the network alone, frame
    by frame on the same frames; and the streaming records."""
    from clipvis.bench.model import StageClock, forward_and_classify
    from clipvis.model.postprocess import resize_for_inference
    from clipvis.video.inference import segment_video

    device = model.clip.pixel_mean.device
    clock = StageClock(model, device)
    resized = [resize_for_inference(frame, cfg.infer.min_size, cfg.infer.max_size, cfg.infer.resize) for frame in video]
    network_only = 0.0
    with torch.inference_mode():
        for frame in resized:
            start = clock.now()
            forward_and_classify(model, model.preprocess([frame]), text, bf16=cfg.infer.precision == "bf16",
                                 compiled=cfg.infer.compile, onednn_linear=cfg.infer.onednn_linear)
            network_only += clock.now() - start

    timings: dict[str, float] = {}
    start = clock.now()
    # A compiled network runs as one graph: module hooks cannot split it into stages.
    with contextlib.nullcontext() if cfg.infer.compile else clock.active():
        records = segment_video(model, iter(video), text, cfg, timings=timings)
    streaming = clock.now() - start
    times = {"streaming": streaming, "network_only": network_only}
    if not cfg.infer.compile:
        times.update({k: v for k, v in clock.seconds.items() if k != "classification_s"})
    times.update({f"{part}_s": seconds for part, seconds in timings.items()})
    times["other_s"] = streaming - sum(timings.get(part, 0.0) for part in STREAMING_PARTS)
    return times, records


def compare_detections(reference: list[dict], other: list[dict], min_iou: float = 0.5) -> dict:
    """How many of the reference's detections `other` keeps: same category and a video mask IoU of at
    least `min_iou` (greedy, best IoU first), with the IoUs and score differences of those kept."""
    pairs = []
    for i, a in enumerate(reference):
        for j, b in enumerate(other):
            if a["category_id"] == b["category_id"]:
                pairs.append((video_mask_iou(a["segmentations"], b["segmentations"]), i, j))
    kept, used_a, used_b = [], set(), set()
    for iou, i, j in sorted(pairs, reverse=True):
        if iou >= min_iou and i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            kept.append((iou, abs(reference[i]["score"] - other[j]["score"])))
    ious, deltas = [k[0] for k in kept], [k[1] for k in kept]
    return {"detections": len(reference), "kept": len(kept), "min_iou": round(min(ious), 4) if ious else None,
            "mean_iou": round(float(np.mean(ious)), 4) if ious else None,
            "max_score_delta": float(max(deltas)) if deltas else None,
            "mean_score_delta": float(np.mean(deltas)) if deltas else None,
            "max_score": float(max(r["score"] for r in reference))}


def video_mask_iou(a: list[dict], b: list[dict]) -> float:
    """IoU of two per-frame RLE sequences, over all frames at once (the video IoU of the YTVIS scorers)."""
    intersection = union = 0
    for rle_a, rle_b in zip(a, b):
        overlap = int(mask_api.area(mask_api.merge([rle_a, rle_b], intersect=True)))
        intersection += overlap
        union += int(mask_api.area(rle_a)) + int(mask_api.area(rle_b)) - overlap
    return intersection / union if union else 1.0


def bench_memory(scale: str = "narrow", lengths: tuple[int, ...] = (100, 1000), queries: int = 100,
                 classes: int = LVVIS_CLASSES, seed: int = 0) -> dict:
    """Peak RSS (MB) of streaming inference per video length, each length in a fresh Python process.

    The frames are not resized (infer.min_size = height). `output_mb` is the size of the RLE strings
    of the records, which are written out one at a time (as `clipvis infer` writes its progress files).
    """
    model, height, width = MEMORY_SCALES[scale]
    overrides = model + [f"model.num_queries={queries}", "infer.device=cpu", f"infer.min_size={height}"]
    runs = {}
    for length in lengths:
        arguments = json.dumps([overrides, length, height, width, classes, seed])
        child = subprocess.run([sys.executable, "-c", MEMORY_CHILD, arguments], capture_output=True, text=True)
        if child.returncode:
            raise RuntimeError(f"memory benchmark child failed:\n{child.stderr[-2000:]}")
        runs[length] = json.loads(child.stdout.strip().splitlines()[-1])
        log.info("%d frames: %s", length, runs[length])
    shortest, longest = min(lengths), max(lengths)
    ratio = runs[longest]["peak_rss_mb"] / runs[shortest]["peak_rss_mb"]
    peak = max(run["peak_rss_mb"] for run in runs.values())
    return {"scale": scale, "height": height, "width": width, "queries": queries, "classes": classes,
            "model": overrides, "torch_threads": torch.get_num_threads(), "runs": runs,
            f"peak_ratio_{longest}_over_{shortest}": round(ratio, 4), "target_ratio": 1 + GROWTH_TARGET,
            "peak_rss_mb": peak, "target_peak_mb": PEAK_TARGET_MB if scale == "paper" else None,
            "within_target": ratio <= 1 + GROWTH_TARGET and (scale != "paper" or peak <= PEAK_TARGET_MB)}


def _config(overrides: list[str]):
    from clipvis.config import load_config

    return load_config(PAPER_PARAMS, ["clip.pretrained=null", *overrides])


MEMORY_CHILD = ("import json, sys; from clipvis.bench.inference import memory_child; "
                "print(json.dumps(memory_child(*json.loads(sys.argv[1]))))")


def memory_child(overrides: list[str], length: int, height: int, width: int, classes: int, seed: int) -> dict:
    """One measured run (in its own process): segment a synthetic video, its records written to a temporary
    file one at a time as `clipvis infer` writes them; report the peak RSS."""
    from clipvis.video.inference import stream_video_variants

    cfg = _config(overrides)
    model, model_seed = random_weight_model(cfg, torch.device("cpu"), seed, height, width)
    text = random_vocabulary(model.clip.embed_dim, classes, seed)
    before = _peak_rss_mb()
    start = time.perf_counter()
    output_bytes = 0
    frames = synthetic_frames(length, height, width, seed)
    with stream_video_variants(model, frames, text, {"": cfg}) as streams, tempfile.TemporaryFile("w") as out:
        for record in streams[""]:
            out.write(json.dumps(record) + "\n")
            output_bytes += sum(len(rle["counts"]) for rle in record["segmentations"])
    return {"frames": length, "model_seed": model_seed, "peak_rss_mb": _peak_rss_mb(), "peak_rss_before_inference_mb": before,
            "output_mb": round(output_bytes / 2 ** 20, 1), "seconds": round(time.perf_counter() - start, 1)}


def random_weight_model(cfg, device: torch.device, seed: int, height: int = 480, width: int = 640):
    """A random-weight segmenter (`load_model` without checkpoint) whose masks look like a trained
    model's: at least half of its queries have a mask on a synthetic frame, covering a few tenths of it
    on average. Some random initialisations predict empty masks everywhere, which would leave
    classification, upsampling and RLE out of every measurement. Tries seeds from `seed` on; returns
    (model, the seed used). The CLIP's text tower is dropped at once, as inference drops it once the
    vocabulary is embedded (the vocabularies of the benchmarks are random)."""
    from clipvis.model.checkpoint import load_model

    frame = next(synthetic_frames(1, height, width, seed))
    for model_seed in range(seed, seed + MODEL_SEED_TRIES):
        torch.manual_seed(model_seed)
        model = load_model(cfg, None, device)
        model.clip.drop_text_tower()
        with torch.inference_mode():
            masks = model(model.preprocess([frame]), with_aux=False)["pred_masks"][0] > 0  # (Q, h, w)
        if masks.flatten(1).any(1).float().mean() >= 0.5 and 0.05 <= masks.float().mean() <= 0.95:
            return model, model_seed
    raise RuntimeError(f"no random initialisation with realistic masks among seeds {seed}..{model_seed}")


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
