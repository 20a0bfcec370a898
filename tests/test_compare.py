"""`clipvis compare`: MLflow runs side by side with the config keys that differ."""

import argparse

import pytest

from clipvis.errors import InputError
from clipvis.commands import compare as compare_command
from clipvis.reports.compare import compare_runs


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


@pytest.fixture
def variant_runs(tmp_path, monkeypatch):
    """Two test-time variants logged as `clipvis infer` and `clipvis score` log them: nested runs under
    "infer toy_lvvis" (fps) and "score toy_lvvis" (AP, APb, APn), in experiment toy/toy of a new store."""
    from clipvis.config import load_config
    from clipvis.evaluation.score_files import log_scores
    from clipvis.tracking import shared_params, stage_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'variants.db'}")
    configs = {"default": load_config(None), "adjacent": load_config(None, ["matching.strategy=adjacent"])}
    tags = {"benchmark": "toy_lvvis"}
    with stage_run(configs["default"], "infer", "infer toy_lvvis", params=shared_params(list(configs.values())),
                   tags=tags) as mlflow:
        mlflow.log_metrics({"fps": 12.5})
        for name, cfg in configs.items():
            with stage_run(cfg, "infer", name, nested=True, tags=tags | {"variant": name}) as child:
                child.log_metrics({"fps": 12.5})
    scored = {"default": {"AP": 0.4321, "APb": 0.5, "APn": 0.1234, "APu": None},
              "adjacent": {"AP": 0.3765, "APb": 0.45, "APn": 0.0987, "APu": None}}
    outputs = {}
    for name in configs:
        outputs[name] = tmp_path / name / "metrics.json"
        outputs[name].parent.mkdir()
        outputs[name].write_text("{}")
        (tmp_path / name / "metrics.per_category.csv").write_text("id\n")
    (tmp_path / "scores.json").write_text("{}")
    log_scores(configs, scored, outputs, tmp_path / "scores.json", "toy_lvvis", tags)


def test_score_variants_show_their_ap_and_the_setting_they_differ_in(variant_runs, capsys):
    table = compare_runs(["toy/toy"], "tags.stage = 'score'")
    assert list(table.columns) == ["experiment", "run", "stage", "benchmark", "AP", "APb", "APn",
                                   "matching.strategy"]
    rows = table.set_index("run")
    assert rows.loc["default", "AP"] == 0.4321 and rows.loc["adjacent", "APn"] == 0.0987
    assert rows.loc["adjacent", "matching.strategy"] == "adjacent" and rows.loc["default", "APb"] == 0.5
    assert rows.loc["score toy_lvvis"].isna()[["AP", "matching.strategy"]].all()  # the parent: shared params only

    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    assert compare_command.main(parser.parse_args(["--filter", "tags.stage = 'score'"])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[1:3] == ["default", "score"] and "0.4321" in line for line in lines)
    assert any(line.split()[1:3] == ["adjacent", "score"] and "0.3765" in line for line in lines)


def test_one_variant_across_stages_has_ap_and_fps_and_no_differing_params(variant_runs):
    table = compare_runs(["toy/toy"], "tags.variant = 'adjacent'")
    assert list(table.columns) == ["experiment", "run", "stage", "benchmark", "AP", "APb", "APn", "FPS"]
    rows = table.set_index("stage")
    assert rows.loc["infer", "FPS"] == 12.5 and rows.loc["score", "AP"] == 0.3765
