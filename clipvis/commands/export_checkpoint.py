"""`clipvis export-checkpoint CKPT.pt --out FILE.pth`: a clipvis checkpoint in the authors' detectron2
layout (with the CLIP it runs on), for their code or for sharing."""

from __future__ import annotations

from pathlib import Path

from clipvis.commands.arguments import check_output_file

HELP = "write a clipvis checkpoint in the authors' CLIP-VIS layout (detectron2 {'model': state_dict})"


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a clipvis checkpoint (trained or imported)")
    parser.add_argument("--out", required=True, type=Path, help="the file to write (.pth)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def main(args) -> int:
    from clipvis.model.authors_layout import export_checkpoint

    check_output_file(args.out, [args.checkpoint], overwrite=args.overwrite)
    export_checkpoint(args.checkpoint, args.out)
    print(args.out)
    return 0
