"""`clipvis data`: generate the toy world, or download and check the files of real benchmarks.

    clipvis data --benchmark toy                      # writes <root>/toy/ from the config's toy section
    clipvis data --benchmark lvvis_val coco_train     # downloads what is public, then checks
    clipvis data --benchmark all-paper --check        # only reports what is missing and where it goes
    clipvis data --benchmark released-weights --check # the authors' checkpoint files (put there by hand)

Annotation files derived from downloads (LVIS without rare categories, BURST in YTVIS style) are
written when their sources are present.

Exits 1 when a file is still missing after the run, listing each one with where it goes.
"""

from __future__ import annotations

from pathlib import Path

from clipvis.commands.arguments import add_config_arguments, config_from_arguments
from clipvis.data.registry import (
    BENCHMARKS,
    DATA_ROOT_ENV,
    PAPER_BENCHMARKS,
    TOY_BENCHMARKS,
    Benchmark,
    get_benchmark,
    missing_paths,
    resolve_root,
)

HELP = "generate the toy world, or download and check a benchmark's files"

RELEASED_WEIGHTS = "released-weights"
GROUPS = {"toy": TOY_BENCHMARKS, "all-paper": (*PAPER_BENCHMARKS, RELEASED_WEIGHTS)}


def add_arguments(parser) -> None:
    parser.add_argument("--benchmark", nargs="+", required=True, metavar="NAME",
                        help=f"one or more of: {', '.join([*GROUPS, RELEASED_WEIGHTS, *BENCHMARKS])}")
    parser.add_argument("--root", help=f"data root (default: ${DATA_ROOT_ENV}, else the config's data.root)")
    add_config_arguments(parser, "config YAML (the toy world's settings and data.root)")
    parser.add_argument("--check", action="store_true", help="download and generate nothing; only report")


def main(args) -> int:
    cfg = config_from_arguments(args)
    root = resolve_root(args.root, cfg.data.root)
    names = _expand(args.benchmark)
    benchmarks = [get_benchmark(name) for name in names if name != RELEASED_WEIGHTS]
    failed = 0
    if not args.check:
        if any(b.is_toy for b in benchmarks):
            from clipvis.toy.generate import generate_toy_world

            generate_toy_world(cfg.toy, root)
        from clipvis.data.derived import derive_missing
        from clipvis.data.download import download_public

        failures = download_public(benchmarks, root)
        for failure in failures:
            print(f"failed   {failure}")
        failed = len(failures)
        derive_missing(benchmarks, root)
    missing = sum(_report(b, root) for b in benchmarks)
    if RELEASED_WEIGHTS in names:
        missing += _report_released_weights(root)
    return 1 if missing or failed else 0


def _expand(names: list[str]) -> list[str]:
    """Benchmark names with the groups `toy` and `all-paper` spelled out, each once."""
    expanded = [member for name in names for member in GROUPS.get(name, (name,))]
    return list(dict.fromkeys(expanded))


def _report_released_weights(root: Path) -> int:
    """Print whether each of the authors' checkpoint files is in place; returns how many are missing."""
    from clipvis.data.released import AUTHORS_PAGE, RELEASED

    missing = 0
    for weights in RELEASED:
        path = weights.path(root)
        if path.is_file():
            print(f"ok       released weights {weights.model}: {path}")
            continue
        missing += 1
        print(f"missing  released weights {weights.model} ({weights.description}): {path}")
        print(f"         how to get it: download {weights.url} (listed at {AUTHORS_PAGE}) and save it as {path}")
    return missing


def _report(benchmark: Benchmark, root: Path) -> int:
    """Print whether the benchmark's files are present; returns how many are missing."""
    missing = missing_paths(benchmark, root)
    if not missing:
        scored = "" if benchmark.has_public_gt else f" (no public ground truth: score on the {benchmark.server})"
        print(f"ok       {benchmark.name}{scored}")
        return 0
    for item in missing:
        print(f"missing  {benchmark.name}: {item.path}{'/ (folder)' if item.is_dir else ''}")
    print(f"         how to get it (paths under {root}): {benchmark.manual}")
    return len(missing)
