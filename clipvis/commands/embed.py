"""`clipvis embed`: compute (or reuse) the cached CLIP text embeddings of a vocabulary."""

from __future__ import annotations

import argparse
from pathlib import Path


HELP = "cache the CLIP text embeddings of a vocabulary and print the cache file's path"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip", required=True, metavar="NAME",
                        help="open_clip model name, e.g. RN50, convnext_base_w_320, clipvis_toy_rn")
    parser.add_argument("--pretrained", metavar="TAG|PATH",
                        help="open_clip tag (openai, laion_aesthetic_s13b_b82k) or checkpoint file; "
                             "random weights if omitted")
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--benchmark", metavar="NAME", help="use the category names of this benchmark")
    vocab.add_argument("--vocab", metavar="'a,b,c'", help="comma-separated class names")
    vocab.add_argument("--vocab-file", type=Path, metavar="FILE",
                       help="one class name per line (commas inside a line separate synonyms)")
    parser.add_argument("--root", help="data root for --benchmark (default: $CLIPVIS_DATA, else data)")
    parser.add_argument("--out-dir", required=True, type=Path, help="cache directory for the embeddings file")


def read_vocabulary(args: argparse.Namespace) -> list[str]:
    """The class names named by --benchmark, --vocab or --vocab-file; empty is an InputError."""
    from clipvis.data.vocabularies import read_vocabulary_file, user_vocabulary, vocabulary

    if args.benchmark:
        from clipvis.data.registry import resolve_root

        return vocabulary(args.benchmark, resolve_root(args.root))
    if args.vocab is not None:
        return user_vocabulary(args.vocab.split(","), "--vocab")
    return read_vocabulary_file(args.vocab_file)


def main(args: argparse.Namespace) -> int:
    class_names = read_vocabulary(args)

    from clipvis.model.clip_encoder import FrozenCLIP
    from clipvis.model.text_classifier import text_cache_path, text_embeddings

    clip = FrozenCLIP(args.clip, args.pretrained)
    text_embeddings(clip, class_names, args.out_dir)
    print(text_cache_path(clip, class_names, args.out_dir))
    return 0
