"""`clipvis pretrain-clip`: train the toy CLIP on the toy image–caption pairs and save it as an open_clip checkpoint."""

from __future__ import annotations

from clipvis.commands.arguments import add_config_arguments, config_from_arguments

HELP = "pretrain the toy CLIP contrastively on the toy caption pairs (writes clip_pretrain.out)"


def add_arguments(parser) -> None:
    add_config_arguments(parser, "params YAML (e.g. params/toy/default.yaml)")
    parser.add_argument("--launcher", choices=["local", "slurm"], help="override launch.launcher")


def main(args) -> int:
    from pathlib import Path

    from clipvis.launch import launch
    from clipvis.toy.clip_pretrain import pretrain_clip

    cfg = config_from_arguments(args, params_required=True)
    if args.launcher:
        cfg.launch.launcher = args.launcher
    checkpoint = launch(cfg, pretrain_clip, cfg, job_name="pretrain-clip", log_dir=Path(cfg.clip_pretrain.out).parent)
    print(checkpoint)
    return 0
