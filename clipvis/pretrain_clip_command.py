"""`clipvis pretrain-clip`: train the toy CLIP on the toy image–caption pairs and save it as an open_clip checkpoint."""

from __future__ import annotations

HELP = "pretrain the toy CLIP contrastively on the toy caption pairs (writes clip_pretrain.out)"


def add_arguments(parser) -> None:
    parser.add_argument("--params", required=True, help="params YAML (e.g. params/toy/default.yaml)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. clip_pretrain.epochs=5 data.root=/tmp/toy")
    parser.add_argument("--launcher", choices=["local", "slurm"], help="override launch.launcher")


def main(args) -> int:
    from pathlib import Path

    from clipvis.config import load_config
    from clipvis.launch import launch
    from clipvis.pretrain_clip import pretrain_clip

    cfg = load_config(args.params, args.overrides)
    if args.launcher:
        cfg.launch.launcher = args.launcher
    checkpoint = launch(cfg, pretrain_clip, cfg, job_name="pretrain-clip", log_dir=Path(cfg.clip_pretrain.out).parent)
    print(checkpoint)
    return 0
