"""MLflow logging: one run per stage execution, grouped per experiment (`<name>/<scale>`).

The tracking store defaults to a local SQLite file (`runs/mlflow.db`); `MLFLOW_TRACKING_URI` points
elsewhere (a server, another file). Params are the resolved config, flattened to dotted keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from clipvis.config import Config, to_dict

log = logging.getLogger(__name__)

DEFAULT_STORE = Path("runs/mlflow.db")


def tracking_uri() -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    DEFAULT_STORE.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_STORE.resolve()}"


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@contextlib.contextmanager
def stage_run(cfg: Config, stage: str, run_name: str | None = None, nested: bool = False) -> Iterator[object]:
    """An MLflow run for one stage execution, with the resolved config as params.

    Yields the `mlflow` module so callers log with `mlflow.log_metrics(...)` etc.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(f"{cfg.name}/{cfg.scale}")
    with mlflow.start_run(run_name=run_name or stage, nested=nested) as run:
        mlflow.set_tags({"stage": stage, "scale": cfg.scale})
        params = flatten(to_dict(cfg))
        mlflow.log_params({key: str(value)[:6000] for key, value in params.items()})
        log.info("MLflow run %s (%s) in experiment %s/%s", run.info.run_id, stage, cfg.name, cfg.scale)
        yield mlflow
