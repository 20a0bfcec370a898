"""`clipvis train` (image training) and `clipvis finetune --init CKPT` (training from a model's weights:
single-frame video fine-tuning, or with `train.trainable: iou_head` a fresh mask-IoU head alone)."""

from __future__ import annotations

from clipvis.commands.arguments import add_config_arguments, config_from_arguments

HELP = "train the segmenter (train: LVIS/COCO images; finetune: from --init, e.g. on YTVIS frames)"


def add_arguments(parser) -> None:
    add_config_arguments(parser, "params YAML (e.g. params/toy/default.yaml)")
    parser.add_argument("--out", required=True, help="output folder (checkpoints, config.yaml)")
    parser.add_argument("--init", help="checkpoint to start from (required for finetune)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint_last.pt in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished training of other settings in --out (refused otherwise)")
    parser.add_argument("--launcher", choices=["local", "slurm"], help="override launch.launcher")


def main(args) -> int:
    from clipvis.errors import InputError
    from clipvis.launch import launch
    from clipvis.training.loop import train

    if args.command == "finetune" and not args.init:
        raise InputError("--init", "", "finetune needs the checkpoint to start from")
    cfg = config_from_arguments(args, params_required=True)
    if args.launcher:
        cfg.launch.launcher = args.launcher
    final = launch(cfg, train, cfg, args.out, init=args.init, resume=not args.no_resume, overwrite=args.overwrite,
                   job_name=args.command,
                   log_dir=args.out)
    print(final)
    return 0
