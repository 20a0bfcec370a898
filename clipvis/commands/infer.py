"""`clipvis infer`: segment every video of a benchmark with a checkpoint -> OUT/results.json (resumable);
with --variants, every test-time variant in one pass -> OUT/<variant>/results.json and OUT/variants.json.
What is written and how a run resumes: `clipvis.video.benchmark`."""

from __future__ import annotations

from pathlib import Path

from clipvis.commands.arguments import add_config_arguments, check_output_folder, config_from_arguments
from clipvis.config import VARIANTS_PARAMS

HELP = "segment every video of a benchmark with a trained checkpoint (writes results.json, resumable)"


def add_arguments(parser) -> None:
    parser.add_argument("--benchmark", required=True, help="registered video benchmark, e.g. toy_lvvis, lvvis_val")
    parser.add_argument("--checkpoint", required=True, help="trained or imported segmenter checkpoint (.pt)")
    add_config_arguments(parser, "params YAML (default: the checkpoint's own config)")
    parser.add_argument("--root", help="data root (default: $CLIPVIS_DATA, else the config's data.root)")
    parser.add_argument("--out", required=True, help="output folder (results.json, progress/, config.yaml)")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="test-time variants from --variants-file, all in one pass: DIR/<variant>/results.json")
    parser.add_argument("--variants-file", default=VARIANTS_PARAMS,
                        help=f"variant name -> list of KEY=VALUE overrides (default: {VARIANTS_PARAMS})")
    parser.add_argument("--launcher", choices=["local", "slurm"],
                        help="override launch.launcher (slurm: one task with at most one GPU; a requeued job "
                             "resumes at the next unfinished video)")


def main(args) -> int:
    from clipvis.config import read_variants
    from clipvis.files import write_json
    from clipvis.launch import launch
    from clipvis.layout import VARIANTS_FILE
    from clipvis.video.benchmark import infer_benchmark

    cfg = config_from_arguments(args)
    check_output_folder(args.out)
    if args.launcher:
        cfg.launch.launcher = args.launcher
    cfg.launch.gpus_per_node = min(cfg.launch.gpus_per_node, 1)  # inference is one process
    variants = cfg
    if args.variants:
        variants = {name: config_from_arguments(args, overrides)
                    for name, overrides in read_variants(args.variants_file, args.variants).items()}
    paths = launch(cfg, infer_benchmark, variants, args.benchmark, args.checkpoint, args.out, root=args.root,
                   job_name="infer", log_dir=args.out)
    if not args.variants:
        print(paths[""])
        return 0
    write_json(Path(args.out) / VARIANTS_FILE, {"benchmark": args.benchmark, "variants": list(paths)}, indent=1)
    print(Path(args.out) / VARIANTS_FILE)
    return 0
