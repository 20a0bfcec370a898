"""The `clipvis` command: one subcommand per pipeline stage.

Each subcommand lives in its own module, imported only when it runs (so `clipvis --help` does not
import torch). A command module defines `HELP`, `add_arguments(parser)` and `main(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from clipvis.errors import InputError
from clipvis.files import os_problem

COMMANDS = {
    "data": "clipvis.commands.data",
    "embed": "clipvis.commands.embed",
    "train": "clipvis.commands.train",
    "finetune": "clipvis.commands.train",
    "pretrain-clip": "clipvis.commands.pretrain_clip",
    "infer": "clipvis.commands.infer",
    "segment": "clipvis.commands.segment",
    "score": "clipvis.commands.score",
    "eval-images": "clipvis.commands.eval_images",
    "matching-test": "clipvis.commands.matching_test",
    "tables": "clipvis.commands.tables",
    "compare": "clipvis.commands.compare",
    "bench": "clipvis.commands.bench",
    "import-checkpoint": "clipvis.commands.import_checkpoint",
    "export-checkpoint": "clipvis.commands.export_checkpoint",
}

log = logging.getLogger("clipvis")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipvis", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return module.main(args) or 0
    except InputError as e:
        print(f"clipvis {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file we could not write (permissions, disk full, a file where a folder should be)
        where = e.filename or "output"
        print(f"clipvis {args.command}: error: {where}: {os_problem(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
