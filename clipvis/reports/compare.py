"""MLflow runs side by side (`clipvis compare`): run name, stage, benchmark, AP, APb, APn, FPS and the
config keys whose values differ between the listed runs. AP/APb/APn come from `clipvis score` runs, FPS
from `clipvis infer` runs; a test-time variant is a nested run named after it (tag `variant`)."""

from __future__ import annotations

import os

import pandas as pd

from clipvis.errors import InputError
from clipvis.tracking import tracking_uri

# Shown name -> MLflow column, in order; a column no listed run has is left out.
BASE_COLUMNS = {"experiment": "experiment", "run": "tags.mlflow.runName", "stage": "tags.stage",
                "benchmark": "tags.benchmark", "AP": "metrics.AP", "APb": "metrics.APb", "APn": "metrics.APn",
                "FPS": "metrics.fps"}


def compare_runs(experiments: list[str] | None, filter_string: str = "", columns: list[str] = (),
                 max_runs: int = 100):
    """A DataFrame, one row per run (newest first): BASE_COLUMNS, then the params that differ, then `columns`."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow  # imported here: mlflow reads the telemetry setting when it is first imported
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.tracking.MlflowClient()
    known = {experiment.name: experiment.experiment_id for experiment in client.search_experiments()}
    for name in experiments or ():
        if name not in known:
            raise InputError("--experiment", name, f"no such experiment (known: {', '.join(sorted(known)) or 'none'})")
    ids = [known[name] for name in experiments] if experiments else list(known.values())
    if not ids:
        return pd.DataFrame()
    try:
        runs = mlflow.search_runs(experiment_ids=ids, filter_string=filter_string, max_results=max_runs,
                                  output_format="pandas")
    except MlflowException as e:
        raise InputError("--filter", filter_string, e.message) from None
    if runs.empty:
        return pd.DataFrame()
    names = {experiment_id: name for name, experiment_id in known.items()}
    runs["experiment"] = runs["experiment_id"].map(names)

    shown = {name: column for name, column in BASE_COLUMNS.items() if column in runs}
    params = [column for column in runs if column.startswith("params.")]
    shown |= {column.removeprefix("params."): column for column in params
              if runs[column].nunique(dropna=False) > 1}
    for column in columns:
        found = _find_column(runs, column)
        if found is None:
            raise InputError("--columns", column, "no listed run has it (try params.KEY, metrics.KEY or tags.KEY)")
        shown[column] = found
    return runs[list(shown.values())].set_axis(list(shown), axis=1)


def _find_column(runs, name: str) -> str | None:
    for candidate in (name, f"params.{name}", f"metrics.{name}", f"tags.{name}"):
        if candidate in runs:
            return candidate
    return None
