"""`clipvis import-checkpoint FILE.pth --params P --out CKPT.pt`: the authors' released weights as a
clipvis checkpoint (their frozen CLIP kept inside), usable by infer, segment and eval-images without
--params."""

from __future__ import annotations

from pathlib import Path

from clipvis.commands.arguments import add_config_arguments, config_from_arguments, check_output_file

HELP = "convert a checkpoint of the authors' CLIP-VIS (detectron2 layout) into a clipvis checkpoint"


def add_arguments(parser) -> None:
    parser.add_argument("file", type=Path, help="the authors' file, e.g. clipvis_lvis_r50_7.pth")
    add_config_arguments(parser, "the params of the file's model, e.g. params/paper/r50_lvis.yaml")
    parser.add_argument("--out", required=True, type=Path, help="the clipvis checkpoint to write (.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def main(args) -> int:
    from clipvis.model.authors_layout import import_checkpoint

    cfg = config_from_arguments(args, params_required=True)
    check_output_file(args.out, [args.file], overwrite=args.overwrite)
    import_checkpoint(args.file, cfg, args.out, params=args.params)
    print(args.out)
    return 0
