"""`clipvis bench TOPIC`: speed and memory measurements printed as JSON.

Targets live here, not in timed tests. Each topic is a function in the module that owns the work,
imported only when asked for.
"""

from __future__ import annotations

import importlib
import json

HELP = "measure speed and memory; prints JSON"

TOPICS = {
    "score": "clipvis.evaluation.bench",
}


def add_arguments(parser) -> None:
    parser.add_argument("topic", choices=sorted(TOPICS), help="what to measure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=837, help="score: number of videos")
    parser.add_argument("--categories", type=int, default=1196, help="score: vocabulary size")
    parser.add_argument("--per-video", type=int, default=50, help="score: predictions per video")
    parser.add_argument("--frames", type=int, default=30, help="score: frames per video")
    parser.add_argument("--height", type=int, default=720, help="score: frame height")
    parser.add_argument("--width", type=int, default=1280, help="score: frame width")
    parser.add_argument("--out", help="also write the JSON to this file")


def main(args) -> int:
    result = importlib.import_module(TOPICS[args.topic]).run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        from clipvis.io import write_text

        write_text(args.out, text + "\n")
    return 0
