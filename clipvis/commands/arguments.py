"""Command-line arguments that several commands share, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

from clipvis.config import Config, load_config
from clipvis.errors import InputError


def add_config_arguments(parser: argparse.ArgumentParser, params_help: str) -> None:
    """--params FILE and --set KEY=VALUE ... (repeatable: every --set adds to the overrides)."""
    parser.add_argument("--params", help=params_help)
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. matching.topk=5 (several after one --set, or "
                             "--set repeated)")


def config_from_arguments(args: argparse.Namespace, more_overrides: list[str] = (),
                          params_required: bool = False) -> Config:
    """The config of --params and --set (then `more_overrides`); with --checkpoint and no --params, the
    checkpoint's own config (with --params, the checkpoint must hold the network it describes)."""
    overrides = [*args.overrides, *more_overrides]
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint:
        from clipvis.model.checkpoint import config_for_checkpoint

        return config_for_checkpoint(checkpoint, args.params, overrides)[0]
    if params_required and not args.params:
        raise InputError("--params", "", "a params file is needed (e.g. params/toy/default.yaml)")
    return load_config(args.params, overrides)


def check_output_file(out: str | Path, inputs: list[str | Path], overwrite: bool = True) -> None:
    """An output file that is one of the inputs is never written, nor one that is a folder; an existing
    one only when `overwrite` (the --overwrite flag of commands that ask for it)."""
    out = Path(out)
    check_output_folder(out.parent)
    if any(out.exists() and Path(item).exists() and out.samefile(item) for item in inputs):
        raise InputError(out, "", "is an input of this command; choose another --out")
    if out.is_dir():
        raise InputError(out, "", "is a folder; --out names the file to write")
    if out.exists() and not overwrite:
        raise InputError(out, "", "exists; pass --overwrite to replace it")


def check_output_folder(out: str | Path) -> None:
    """An output folder must not be an existing file (nor sit under one)."""
    out = Path(out)
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise InputError(out, "", f"{folder} is a file, not a folder")
            return


def add_vocabulary_arguments(parser: argparse.ArgumentParser) -> None:
    """--vocab 'a,b' | --vocab-file FILE | --benchmark NAME (one of them), and --root for --benchmark."""
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--vocab", metavar="'a,b,c'", help="comma-separated class names")
    vocab.add_argument("--vocab-file", type=Path, metavar="FILE",
                       help="one class name per line (commas inside a line separate synonyms)")
    vocab.add_argument("--benchmark", help="the vocabulary of a registered benchmark (e.g. toy_lvvis, lvvis_val)")
    parser.add_argument("--root", help="data root for --benchmark (default: $CLIPVIS_DATA, else data)")


def vocabulary_from_arguments(args: argparse.Namespace) -> list[str]:
    """The class names named by --benchmark, --vocab or --vocab-file; empty is an InputError."""
    from clipvis.data.vocabularies import read_vocabulary_file, user_vocabulary, vocabulary

    if args.benchmark:
        from clipvis.data.registry import resolve_root

        return vocabulary(args.benchmark, resolve_root(args.root))
    if args.vocab is not None:
        return user_vocabulary(args.vocab.split(","), "--vocab")
    return read_vocabulary_file(args.vocab_file)
