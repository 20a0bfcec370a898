"""`clipvis bench model` and `clipvis bench complexity`: where a frame's time goes, and FLOPs.

model: per-frame time of each part of the network (CLIP trunk, pixel decoder and within it the
deformable-attention core, query decoder, CLIP classification) for RN50 and ConvNeXt-B (random
weights, a synthetic 480×640 frame, the 1,196-class LV-VIS vocabulary size), in float32 and under
the bfloat16 option, measured alternately in one process; the bf16/fp32 ratios and how far bf16 moves
the outputs; peak memory; the toy training step time.
complexity (Table VI): FLOPs per frame counted with PyTorch's flop counter and frames per second of
a trained model, at the benchmark's test frame size.

`StageClock` splits a real forward pass into those parts with module hooks, so that the same split
is measured inside streaming inference (`clipvis bench infer`).
"""

from __future__ import annotations

import contextlib
import resource
import time
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from clipvis.config import Config, load_config
from clipvis.heap import keep_freed_memory
from clipvis.model import deform_attn

REAL_CLIPS = {"R50": "RN50", "ConvNeXt-B": "convnext_base_w_320"}
LVVIS_CLASSES = 1196
NETWORK_STAGES = ("trunk_s", "pixel_decoder_s", "deformable_core_s", "query_decoder_s", "classification_s")


class StageClock:
    """Seconds spent in the network's stages, added up over every forward pass while active.

    trunk: from the call of the model to the pixel decoder; pixel_decoder; deformable_core (inside the
    pixel decoder: `ms_deform_attn_core` alone); query_decoder. `classification()` times a block by hand.
    """

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.seconds = dict.fromkeys(NETWORK_STAGES, 0.0)
        self._marks: dict[str, float] = {}

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextlib.contextmanager
    def active(self):
        def mark(name):
            return lambda *_: self._marks.__setitem__(name, self.now())

        def add(stage, since):
            def hook(*_):
                self.seconds[stage] += self.now() - self._marks[since]
            return hook

        core = deform_attn.ms_deform_attn_core

        def timed_core(*args):
            start = self.now()
            out = core(*args)
            self.seconds["deformable_core_s"] += self.now() - start
            return out

        handles = [self.model.register_forward_pre_hook(mark("model")),
                   self.model.pixel_decoder.register_forward_pre_hook(add("trunk_s", "model")),
                   self.model.pixel_decoder.register_forward_pre_hook(mark("pixel_decoder")),
                   self.model.pixel_decoder.register_forward_hook(add("pixel_decoder_s", "pixel_decoder")),
                   self.model.decoder.register_forward_pre_hook(mark("decoder")),
                   self.model.decoder.register_forward_hook(add("query_decoder_s", "decoder"))]
        try:
            with mock.patch.object(deform_attn, "ms_deform_attn_core", timed_core):
                yield self
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def classification(self):
        start = self.now()
        yield
        self.seconds["classification_s"] += self.now() - start


def run_model(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    keep_freed_memory()
    precisions = args.precisions.split(",")
    results = {"device": str(device), "threads": torch.get_num_threads(), "frame": [args.height, args.width],
               "classes": LVVIS_CLASSES, "repeats": args.repeats, "seconds": "per frame, the minimum over repeats"}
    for label, clip in REAL_CLIPS.items():
        cfg = load_config("params/paper/base.yaml", [f"clip.model={clip}", "clip.pretrained=null"])
        results[label] = compare_precisions(cfg, args.height, args.width, args.repeats, device, precisions)
    results["toy_train_step_s"] = time_toy_train_step(repeats=args.repeats)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return results


def compare_precisions(cfg: Config, height: int, width: int, repeats: int, device: torch.device,
                       precisions: list[str]) -> dict:
    """Per precision, the seconds of each part (runs of the precisions alternate); with both, the
    bf16/fp32 ratios and bf16's effect on the outputs."""
    from clipvis.bench.inference import random_vocabulary, random_weight_model, synthetic_frames

    model, model_seed = random_weight_model(cfg, device, 0, height, width)
    text = random_vocabulary(model.clip.embed_dim, LVVIS_CLASSES, seed=0)
    image = model.preprocess(list(synthetic_frames(1, height, width, seed=0)))
    best: dict[str, dict[str, float]] = {p: {} for p in precisions}
    outputs = {}
    with torch.inference_mode():
        for repeat in range(repeats + 1):  # the first round warms up
            for precision in precisions:
                clock = StageClock(model, device)
                start = clock.now()
                with clock.active():
                    outputs[precision] = forward_and_classify(model, image, text, clock, precision == "bf16")
                times = {**clock.seconds, "total_s": clock.now() - start}
                if repeat:
                    best[precision] = {k: min(v, best[precision].get(k, float("inf"))) for k, v in times.items()}
    result = {"model_seed": model_seed, **{p: {k: round(v, 4) for k, v in best[p].items()} for p in precisions}}
    if {"fp32", "bf16"} <= set(precisions):
        result["bf16_over_fp32"] = {k: round(best["bf16"][k] / best["fp32"][k], 3)
                                    for k in best["fp32"] if best["fp32"][k] > 0}
        result["bf16_output_change"] = output_change(outputs["fp32"], outputs["bf16"])
    return result


def forward_and_classify(model, image: torch.Tensor, text, clock: StageClock | None = None, bf16: bool = False,
                         compiled: bool = False, onednn_linear: bool = True) -> dict:
    outputs = model.infer(image, bf16=bf16, compiled=compiled, onednn_linear=onednn_linear)
    with clock.classification() if clock else contextlib.nullcontext():
        outputs["class_logits"] = model.class_logits(outputs["clip_dense"], outputs["pred_masks"], text)
    return outputs


def output_change(reference: dict, other: dict) -> dict:
    """How far `other` moved the outputs from `reference` (one frame): largest and mean absolute
    differences of the logits, and the share of mask pixels whose sign changed."""
    change = {}
    for key in ("pred_object_logits", "pred_ious", "pred_masks", "class_logits"):
        diff = (reference[key].float() - other[key].float()).abs()
        change[key] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                       "max_abs_value": float(reference[key].abs().max())}
    flips = (reference["pred_masks"] > 0) != (other["pred_masks"] > 0)
    change["mask_pixels_flipped"] = float(flips.float().mean())
    return change


def run_complexity(args, cfg: Config) -> dict:
    from clipvis.bench.inference import random_vocabulary
    from clipvis.model.checkpoint import inference_device, load_model

    device = inference_device(cfg.infer.device)
    model = load_model(cfg, args.checkpoint, device).requires_grad_(False)
    height, width = args.height, args.width
    image = torch.zeros(1, 3, height, width, device=device)
    classes = LVVIS_CLASSES if cfg.scale == "paper" else len(cfg.toy.colours) * len(cfg.toy.shapes)
    text = random_vocabulary(model.clip.embed_dim, classes, args.seed)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward_and_classify(model, image, text)
    parts = time_parts(model, image, text, args.repeats, device)
    return {"gflops_per_frame": counter.get_total_flops() / 1e9, "fps": 1.0 / parts["total_s"],
            "fps_covers": "network and CLIP classification of one frame (no matching or mask encoding)",
            "device": f"{device} ({torch.get_num_threads()} threads)", "frame_size": [height, width],
            "parts_s": parts}


def time_parts(model, image: torch.Tensor, text, repeats: int, device: torch.device) -> dict:
    """Seconds per frame of each part (the minimum over `repeats` runs after one warm-up)."""
    best: dict[str, float] = {}
    with torch.inference_mode():
        for repeat in range(repeats + 1):
            clock = StageClock(model, device)
            start = clock.now()
            with clock.active():
                forward_and_classify(model, image, text, clock)
            times = {**clock.seconds, "total_s": clock.now() - start}
            if repeat:
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
