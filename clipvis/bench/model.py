"""`clipvis bench model` and `clipvis bench complexity`: where a frame's time goes, and FLOPs.

model: per-frame forward time split into CLIP trunk / pixel decoder / query decoder / classification
for RN50 and ConvNeXt-B (random weights, 480×640, the 1196-class LV-VIS vocabulary size), peak
memory, and the toy training step time.
complexity (Table VI): FLOPs per frame counted with PyTorch's flop counter and frames per second of
a trained model, at the benchmark's test frame size.
"""

from __future__ import annotations

import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from clipvis.config import Config, load_config
from clipvis.bench.inference import random_vocabulary

REAL_CLIPS = {"R50": "RN50", "ConvNeXt-B": "convnext_base_w_320"}
LVVIS_CLASSES = 1196


def run_model(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {"device": str(device), "threads": torch.get_num_threads(), "frame": [args.height, args.width]}
    for label, clip in REAL_CLIPS.items():
        cfg = load_config("params/paper/base.yaml", [f"clip.model={clip}", "clip.pretrained=null"])
        results[label] = time_parts(cfg, args.height, args.width, repeats=args.repeats, device=device)
    results["toy_train_step_s"] = time_toy_train_step(repeats=args.repeats)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def run_complexity(args, cfg: Config) -> dict:
    from clipvis.model.checkpoint import inference_device, load_model

    device = inference_device(cfg.infer.device)
    model = load_model(cfg, args.checkpoint, device).requires_grad_(False)
    height, width = args.height, args.width
    image = torch.zeros(1, 3, height, width, device=device)
    classes = LVVIS_CLASSES if cfg.scale == "paper" else len(cfg.toy.colours) * len(cfg.toy.shapes)
    text = random_vocabulary(model.clip.embed_dim, classes, args.seed)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _forward_and_classify(model, image, text)
    parts = time_parts(cfg, height, width, repeats=args.repeats, device=device, model=model, text=text)
    return {"gflops_per_frame": counter.get_total_flops() / 1e9, "fps": 1.0 / parts["total_s"],
            "fps_covers": "network and CLIP classification of one frame (no matching or mask encoding)",
            "device": f"{device} ({torch.get_num_threads()} threads)", "frame_size": [height, width],
            "parts_s": parts}


def time_parts(cfg: Config, height: int, width: int, repeats: int, device: torch.device, model=None,
               text=None) -> dict:
    """Seconds per frame of each part (the minimum over `repeats` runs after one warm-up)."""
    from clipvis.model.clipvis_model import CLIPVIS

    model = model or CLIPVIS.from_config(cfg.model, cfg.clip).to(device).eval()
    text = text or random_vocabulary(model.clip.embed_dim, LVVIS_CLASSES, seed=0)
    image = torch.randn(1, 3, height, width, device=device)
    best: dict[str, float] = {}
    with torch.no_grad():
        for _ in range(repeats + 1):
            times = {}
            start = _now(device)
            features = model.clip.features(image)
            times["clip_trunk_s"] = _now(device) - start
            mask_features, multi_scale = model.pixel_decoder(features)
            times["pixel_decoder_s"] = _now(device) - start - sum(times.values())
            outputs = model.decoder(multi_scale, mask_features, with_aux=False)
            times["query_decoder_s"] = _now(device) - start - sum(times.values())
            model.class_logits(features["clip_dense"], outputs["pred_masks"], text)
            times["classification_s"] = _now(device) - start - sum(times.values())
            times["total_s"] = sum(times.values())
            best = {k: min(v, best.get(k, float("inf"))) for k, v in times.items()}
    return best


def time_toy_train_step(repeats: int) -> float:
    """Seconds per optimiser step of the toy model (batch 4 of 128×160 images, random CLIP)."""
    from clipvis.model.clipvis_model import CLIPVIS
    from clipvis.training.loop import build_criterion, build_optimizer, train_step

    cfg = load_config("params/toy/default.yaml", ["clip.pretrained=null"])
    model = CLIPVIS.from_config(cfg.model, cfg.clip).train()
    criterion, optimizer = build_criterion(cfg), build_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(0)
    batch = [{"image": torch.randint(0, 255, (3, 128, 160), dtype=torch.uint8, generator=generator),
              "masks": torch.rand(3, 128, 160, generator=generator) > 0.7} for _ in range(cfg.train.batch_size)]
    best = float("inf")
    for iteration in range(repeats + 1):
        start = time.perf_counter()
        train_step(model, model, criterion, optimizer, batch, cfg, iteration, torch.device("cpu"))
        best = min(best, time.perf_counter() - start) if iteration else best
    return best


def _forward_and_classify(model, image, text):
    outputs = model(image, with_aux=False)
    return model.class_logits(outputs["clip_dense"], outputs["pred_masks"], text)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
