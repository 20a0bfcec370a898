"""`clipvis bench TOPIC`: speed and memory measurements printed as JSON.

Targets live here, not in timed tests. Each topic is a function of `clipvis.bench`, imported only when
asked for; topics that read the config get it resolved from --params/--set (and --checkpoint).
"""

from __future__ import annotations

import importlib
import json

from clipvis.commands.arguments import add_config_arguments, config_from_arguments

HELP = "measure speed and memory; prints JSON"

# topic -> (function "module:name", help)
TOPICS = {
    "score": ("clipvis.bench.scorer:run", "the video AP scorer on an LV-VIS-sized problem"),
    "model": ("clipvis.bench.model:run_model", "per-frame time of each model part, RN50 and ConvNeXt-B, fp32 and bf16"),
    "complexity": ("clipvis.bench.model:run_complexity", "FLOPs and frames/s of a trained model (Table VI)"),
    "infer": ("clipvis.bench.inference:run_infer",
              "streaming inference against the network alone, where the time goes, fp32 and bf16, eager and compiled"),
    "memory": ("clipvis.bench.inference:run_memory", "peak memory of a 100- vs 1,000-frame video"),
    "toy": ("clipvis.bench.toy:run",
            "what bounds the toy experiment: CLIP-grid visibility, ground-truth-mask classification, "
            "oracle-class AP, slot switches, training loss"),
    "iou-head": ("clipvis.bench.iou_head:run",
                 "how well a trained model's mask-IoU head predicts its masks' IoU (rank correlation, error)"),
    "gpu": ("clipvis.bench.gpu:run", "the GPU check: AMP training, DDP, FPS, memory, CPU vs GPU outputs"),
}


def add_arguments(parser) -> None:
    topics = parser.add_subparsers(dest="topic", required=True, metavar="TOPIC")
    for name, (_, help_text) in TOPICS.items():
        topic = topics.add_parser(name, help=help_text, description=help_text)
        topic.add_argument("--seed", type=int, default=0)
        topic.add_argument("--out", help="also write the JSON to this file")
        topic.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
        if name == "score":
            topic.add_argument("--videos", type=int, default=837)
            topic.add_argument("--categories", type=int, default=1196)
            topic.add_argument("--per-video", type=int, default=50, help="predictions per video")
            topic.add_argument("--frames", type=int, default=30, help="frames per video")
            topic.add_argument("--height", type=int, default=720)
            topic.add_argument("--width", type=int, default=1280)
        if name in ("model", "complexity", "infer"):
            topic.add_argument("--repeats", type=int, default=2 if name == "infer" else 3,
                               help="timed rounds after a warm-up; the minimum is reported")
        if name in ("model", "complexity"):
            topic.add_argument("--height", type=int, default=480)
            topic.add_argument("--width", type=int, default=640)
        if name in ("model", "infer"):
            topic.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
        if name in ("complexity", "iou-head"):
            topic.add_argument("--checkpoint", required=True)
            add_config_arguments(topic, "params YAML (default: the checkpoint's own config)")
        if name == "infer":
            topic.add_argument("--infer-frames", type=int, default=10, help="frames of the video timed")
            topic.add_argument("--clips", default="RN50,convnext_base_w_320", help="comma-separated open_clip models")
            topic.add_argument("--chunks", default="10", help="comma-separated infer.frames_per_chunk values")
            topic.add_argument("--modes", default="eager,compiled",
                               help="comma-separated: eager, compiled (the network through torch.compile, infer.compile)")
        if name == "toy":
            add_config_arguments(topic, "params YAML (CLIP, infer sizes; default: params/toy/default.yaml)")
            topic.set_defaults(params="params/toy/default.yaml")
            topic.add_argument("--model-runs", help="a trained model's runs folder (e.g. runs/toy/default, with "
                                                    "train/ and infer/): adds the segmenter and training diagnostics")
        if name in ("toy", "iou-head"):
            topic.add_argument("--root", help="data root (default: $CLIPVIS_DATA, else the config's data.root)")
            topic.add_argument("--frame-step", type=int, default=4, help="use every n-th frame of each video")
        if name == "memory":
            topic.add_argument("--scale", choices=("narrow", "paper"), default="narrow",
                               help="narrow: a small model on 240x320 (quick); paper: RN50 on 480x640")
            topic.add_argument("--lengths", default="100,1000", help="comma-separated video lengths")
        if name == "gpu":
            topic.add_argument("--steps", type=int, default=20, help="AMP training steps")
            topic.add_argument("--train-batch", type=int, default=4, help="images per AMP training step")
            topic.add_argument("--train-size", type=int, default=1024, help="side of the square training images")
            topic.add_argument("--fps-frames", type=int, default=30, help="frames of the video timed per model")
            topic.add_argument("--frames", type=int, default=10, help="frames of the CPU vs GPU video")
            topic.add_argument("--height", type=int, default=480, help="frame height of the CPU vs GPU video")
            topic.add_argument("--width", type=int, default=640, help="frame width of the CPU vs GPU video")


def main(args) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    module_name, function_name = TOPICS[args.topic][0].split(":")
    run = getattr(importlib.import_module(module_name), function_name)
    result = run(args, config_from_arguments(args)) if hasattr(args, "overrides") else run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from clipvis.files import write_text

        write_text(args.out, text + "\n")
    return 0
