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
    "model": ("clipvis.bench.model:run_model", "per-frame time of each model part, RN50 and ConvNeXt-B"),
    "complexity": ("clipvis.bench.model:run_complexity", "FLOPs and frames/s of a trained model (Table VI)"),
    "infer": ("clipvis.bench.inference:run_infer", "frames/s of streaming inference and its time shares"),
    "memory": ("clipvis.bench.inference:run_memory", "peak memory of a 100- vs 1,000-frame video"),
    "toy": ("clipvis.bench.toy:run",
            "what bounds the toy experiment: CLIP-grid visibility, ground-truth-mask classification, "
            "oracle-class AP, slot switches, training loss"),
}


def add_arguments(parser) -> None:
    topics = parser.add_subparsers(dest="topic", required=True, metavar="TOPIC")
    for name, (_, help_text) in TOPICS.items():
        topic = topics.add_parser(name, help=help_text, description=help_text)
        topic.add_argument("--seed", type=int, default=0)
        topic.add_argument("--out", help="also write the JSON to this file")
        if name == "score":
            topic.add_argument("--videos", type=int, default=837)
            topic.add_argument("--categories", type=int, default=1196)
            topic.add_argument("--per-video", type=int, default=50, help="predictions per video")
            topic.add_argument("--frames", type=int, default=30, help="frames per video")
            topic.add_argument("--height", type=int, default=720)
            topic.add_argument("--width", type=int, default=1280)
        if name in ("model", "complexity"):
            topic.add_argument("--repeats", type=int, default=3, help="timed runs; the minimum is reported")
            topic.add_argument("--height", type=int, default=480)
            topic.add_argument("--width", type=int, default=640)
        if name == "complexity":
            topic.add_argument("--checkpoint", required=True)
            add_config_arguments(topic, "params YAML (default: the checkpoint's own config)")
        if name == "infer":
            topic.add_argument("--infer-frames", type=int, default=10, help="frames timed per model")
        if name == "toy":
            add_config_arguments(topic, "params YAML (CLIP, infer sizes; default: params/toy/default.yaml)")
            topic.set_defaults(params="params/toy/default.yaml")
            topic.add_argument("--root", help="data root (default: $CLIPVIS_DATA, else the config's data.root)")
            topic.add_argument("--model-runs", help="a trained model's runs folder (e.g. runs/toy/default, with "
                                                    "train/ and infer/): adds the segmenter and training diagnostics")
            topic.add_argument("--frame-step", type=int, default=4, help="classify ground-truth masks in every n-th frame")


def main(args) -> int:
    module_name, function_name = TOPICS[args.topic][0].split(":")
    run = getattr(importlib.import_module(module_name), function_name)
    result = run(args, config_from_arguments(args)) if hasattr(args, "overrides") else run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from clipvis.files import write_text

        write_text(args.out, text + "\n")
    return 0
