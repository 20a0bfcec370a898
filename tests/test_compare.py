"""`clipvis compare`: MLflow runs side by side with the config keys that differ."""

import argparse

import pytest

from clipvis.errors import InputError
from clipvis.reports import compare_command
from clipvis.reports.compare_command import compare_runs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two infer runs that differ only in matching.strategy, and one train run in another experiment."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow")
    patch = pytest.MonkeyPatch()
    patch.chdir(folder)
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'm.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'm.db'}")
    mlflow.set_experiment("toy/toy")
    for strategy, ap, fps in (("topk", 0.25, 3.5), ("adjacent", 0.20, 3.75)):
        with mlflow.start_run(run_name=f"infer {strategy}"):
            mlflow.set_tags({"stage": "infer", "scale": "toy"})
            mlflow.log_params({"matching.strategy": strategy, "model.hidden_dim": "64", "train.lr": "0.0003"})
            mlflow.log_metrics({"AP": ap, "APn": ap / 2, "fps": fps})
    mlflow.set_experiment("other/toy")
    with mlflow.start_run(run_name="train"):
        mlflow.set_tags({"stage": "train"})
        mlflow.log_params({"matching.strategy": "topk", "model.hidden_dim": "32"})
        mlflow.log_metrics({"total": 1.0})
    yield folder
    patch.undo()


def test_differing_params_become_columns(store):
    table = compare_runs(["toy/toy"])
    assert list(table.columns) == ["experiment", "run", "stage", "AP", "APn", "FPS", "matching.strategy"]
    rows = table.set_index("run")
    assert rows.loc["infer topk", "matching.strategy"] == "topk" and rows.loc["infer adjacent", "AP"] == 0.20
    assert rows.loc["infer adjacent", "FPS"] == 3.75 and rows.loc["infer topk", "stage"] == "infer"


def test_filter_and_extra_columns(store):
    table = compare_runs(["toy/toy"], "params.matching.strategy = 'topk'", ["train.lr"])
    assert table["run"].tolist() == ["infer topk"]
    assert "matching.strategy" not in table  # one run: nothing differs
    assert table["train.lr"].tolist() == ["0.0003"]


def test_every_experiment_by_default(store):
    table = compare_runs(None)
    assert sorted(table["run"]) == ["infer adjacent", "infer topk", "train"]
    assert "model.hidden_dim" in table and "matching.strategy" in table  # differs across the three runs
    assert set(table["experiment"]) == {"toy/toy", "other/toy"}


def test_bad_input_names_the_option(store):
    with pytest.raises(InputError, match="--experiment: nope: no such experiment"):
        compare_runs(["nope"])
    with pytest.raises(InputError, match="--filter"):
        compare_runs(None, "params.matching.strategy === 'topk'")
    with pytest.raises(InputError, match="--columns: nope"):
        compare_runs(None, "", ["nope"])


def test_command_prints_the_table(store, capsys):
    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    assert compare_command.main(parser.parse_args(["--experiment", "toy/toy"])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["experiment", "run", "stage", "AP", "APn", "FPS", "matching.strategy"]
    assert any("adjacent" in line and "3.75" in line for line in lines[1:])
