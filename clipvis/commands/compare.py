"""`clipvis compare`: MLflow runs side by side — run name, stage, benchmark, AP, APb, APn, FPS and the
config keys whose values differ between the listed runs.

AP/APb/APn come from `clipvis score` runs, FPS from `clipvis infer` runs; a test-time variant is a
nested run named after it (tag `variant`), under the "score <benchmark>" or "infer <benchmark>" run.

    clipvis compare --experiment toy/toy --filter "tags.stage = 'score' and tags.benchmark = 'toy_lvvis'"
    clipvis compare --filter "params.matching.strategy = 'topk'"
    clipvis compare --columns train.lr metrics.loss_mask

The store is the pipeline's (`MLFLOW_TRACKING_URI`, else runs/mlflow.db).
"""

from __future__ import annotations

HELP = "compare MLflow runs: run name, stage, AP, APb, APn, FPS and the config keys that differ"

def add_arguments(parser) -> None:
    parser.add_argument("--experiment", nargs="+", metavar="E",
                        help="experiment name(s), e.g. toy/toy (default: every experiment)")
    parser.add_argument("--filter", default="", metavar="F",
                        help="MLflow search filter, e.g. \"params.matching.strategy = 'topk'\" or \"tags.stage = 'score'\"")
    parser.add_argument("--columns", nargs="+", default=[], metavar="C",
                        help="more columns: a config key (train.lr), or params./metrics./tags. followed by a key")
    parser.add_argument("--max-runs", type=int, default=100, help="at most this many runs, newest first (default 100)")


def main(args) -> int:
    import pandas as pd

    from clipvis.reports.compare import compare_runs

    table = compare_runs(args.experiment, args.filter, args.columns, args.max_runs)
    if table.empty:
        print("no runs match")
        return 0
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 40):
        print(table.to_string(index=False, na_rep="-"))
    return 0
