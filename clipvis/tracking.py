"""MLflow logging: one run per stage execution, grouped per experiment (`<name>/<scale>`).

The tracking store defaults to a local SQLite file (`runs/mlflow.db`); `MLFLOW_TRACKING_URI` points
elsewhere (a server, another file). Params are the resolved config, flattened to dotted keys. A stage
that runs several test-time variants at once logs a parent run with the params all variants share and
one nested run per variant (tags `variant`, `benchmark`) with that variant's whole config.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from clipvis.config import Config, to_dict, training_settings
from clipvis.layout import MLFLOW_STORE

log = logging.getLogger(__name__)

DEFAULT_STORE = Path(MLFLOW_STORE)
TRAINING_STAGE = "train"  # the MLflow `stage` tag of training runs (train and finetune)


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


def config_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values as (length-capped) strings."""
    return {key: str(value)[:6000] for key, value in flatten(to_dict(cfg)).items()}


def shared_params(configs: list[Config]) -> dict[str, str]:
    """The params whose value is the same in every config (those of a parent run over variants)."""
    first, *others = [config_params(cfg) for cfg in configs]
    return {key: value for key, value in first.items() if all(other.get(key) == value for other in others)}


@contextlib.contextmanager
def stage_run(cfg: Config, stage: str, run_name: str | None = None, nested: bool = False,
              params: dict[str, str] | None = None, tags: dict[str, str] | None = None) -> Iterator[object]:
    """An MLflow run for one stage execution in experiment `<cfg.name>/<cfg.scale>`, tagged with the stage.

    `params` default to the whole resolved config; `nested` makes it a child of the active run.
    Yields the `mlflow` module so callers log with `mlflow.log_metrics(...)` etc.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(f"{cfg.name}/{cfg.scale}")
    with mlflow.start_run(run_name=run_name or stage, nested=nested) as run:
        mlflow.set_tags({"stage": stage, "scale": cfg.scale, **(tags or {})})
        mlflow.log_params(config_params(cfg) if params is None else params)
        log.info("MLflow run %s (%s) in experiment %s/%s", run.info.run_id, stage, cfg.name, cfg.scale)
        yield mlflow


def training_history(client, config: dict, scale: str) -> dict[str, dict[int, float]]:
    """Loss curves {metric: {step: value}} of the MLflow training runs made with this config.

    The runs are those in experiment "{name}/{scale}" tagged stage=train whose params agree with the config on
    every training setting (test-time settings may differ: a finished training rerun with another `matching.topk`
    is the same training); a resumed training logs a new run that continues the steps, and a later run wins a
    step twice logged.
    """
    experiment = client.get_experiment_by_name(f"{config['name']}/{scale}")
    if experiment is None:
        return {}
    expected = {key: str(value)[:6000] for key, value in flatten(training_settings(config)).items()}
    runs = client.search_runs([experiment.experiment_id], f"tags.stage = '{TRAINING_STAGE}'",
                              order_by=["attributes.start_time ASC"])
    history: dict[str, dict[int, float]] = {}
    for run in runs:
        if any(run.data.params.get(key) != value for key, value in expected.items()):
            continue
        for key in sorted(run.data.metrics):
            if key == "total" or key.startswith("loss_"):
                for point in client.get_metric_history(run.info.run_id, key):
                    history.setdefault(key, {})[point.step] = point.value
    return history
