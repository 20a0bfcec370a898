"""`clipvis embed`: compute (or reuse) the cached CLIP text embeddings of a vocabulary."""

from __future__ import annotations

import argparse
from pathlib import Path

from clipvis.commands.arguments import add_vocabulary_arguments, vocabulary_from_arguments

HELP = "cache the CLIP text embeddings of a vocabulary and print the cache file's path"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip", required=True, metavar="NAME",
                        help="open_clip model name, e.g. RN50, convnext_base_w_320, clipvis_toy_rn")
    parser.add_argument("--pretrained", metavar="TAG|PATH",
                        help="open_clip tag (openai, laion_aesthetic_s13b_b82k) or checkpoint file; "
                             "random weights if omitted")
    add_vocabulary_arguments(parser)
    parser.add_argument("--out-dir", required=True, type=Path, help="cache directory for the embeddings file")


def main(args: argparse.Namespace) -> int:
    class_names = vocabulary_from_arguments(args)

    from clipvis.model.clip_encoder import FrozenCLIP
    from clipvis.model.text_classifier import text_cache_path, text_embeddings

    clip = FrozenCLIP(args.clip, args.pretrained)
    text_embeddings(clip, class_names, args.out_dir)
    print(text_cache_path(clip, class_names, args.out_dir))
    return 0
