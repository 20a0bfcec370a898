"""`clipvis matching-test`: the matching strategies on shuffled queries with noisy embeddings, scored on
identity recovery and AP (`clipvis.bench.matching`)."""

from __future__ import annotations

from clipvis.commands.arguments import add_config_arguments, config_from_arguments
from clipvis.config import VARIANTS_PARAMS

HELP = "score the matching strategies on shuffled queries with noisy embeddings (identity recovery and AP)"


def add_arguments(parser) -> None:
    parser.add_argument("--benchmark", required=True, help="a video benchmark with ground truth, e.g. toy_ovis")
    parser.add_argument("--checkpoint", required=True, help="trained segmenter checkpoint (.pt)")
    parser.add_argument("--variants", nargs="+", required=True, metavar="NAME",
                        help="matching strategies: test-time variants of --variants-file (adjacent, T9_K3, ...)")
    parser.add_argument("--variants-file", default=VARIANTS_PARAMS)
    parser.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.5, 1.0, 2.0],
                        help="noise levels: the noise's norm over the embedding's (default: 0 0.5 1 2)")
    add_config_arguments(parser, "params YAML (default: the checkpoint's own config)")
    parser.add_argument("--root", help="data root (default: $CLIPVIS_DATA, else the config's data.root)")
    parser.add_argument("--out", required=True, help="output folder: matching_test.json")


def main(args) -> int:
    from clipvis.bench.matching import run_matching_test
    from clipvis.config import read_variants

    cfg = config_from_arguments(args)
    variants = {name: config_from_arguments(args, overrides)
                for name, overrides in read_variants(args.variants_file, args.variants).items()}
    print(run_matching_test(cfg, variants, args.benchmark, args.checkpoint, args.noise, args.out, args.root))
    return 0
