"""`clipvis score`: output files, printed summary, and bad input (exit 2, nothing written)."""

import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_api
import pytest

from clipvis.cli import main


def box(y0, y1, x0, x1):
    mask = np.zeros((8, 8), dtype=np.uint8, order="F")
    mask[y0:y1, x0:x1] = 1
    encoded = mask_api.encode(mask)
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


TRACK = [box(0, 4, 0, 4), None]
GT = {
    "videos": [{"id": 1, "width": 8, "height": 8, "length": 2, "file_names": ["1/0.jpg", "1/1.jpg"]}],
    "categories": [{"id": 1, "name": "cat", "partition": 0}, {"id": 2, "name": "dog", "partition": 2}],
    "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": TRACK,
                     "areas": [16, None]}],
}
RESULTS = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": TRACK},
           {"video_id": 1, "category_id": 1, "score": 0.8, "segmentations": TRACK}]


def write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_score_writes_metrics_and_per_category_csv(tmp_path, capsys):
    out = tmp_path / "eval" / "metrics.json"
    code = main(["score", "--gt", write(tmp_path / "gt.json", GT),
                 "--results", write(tmp_path / "results.json", RESULTS), "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["flavour"] == "lvvis" and report["strict_matching"] is False
    assert report["metrics"]["AP"] == pytest.approx(1.0, abs=1e-12)
    assert report["metrics"]["APn"] is None  # the only novel category has no ground truth
    assert report["counts"] == {"videos": 1, "categories": 2, "categories_with_gt": 1, "gt_tracks": 1,
                                "predictions": 2, "predictions_scored_zero": 0}
    rows = list(csv.DictReader((tmp_path / "eval" / "metrics.per_category.csv").open()))
    assert [(row["id"], row["name"], row["group"], row["num_gt"], row["num_predictions"]) for row in rows] == [
        ("1", "cat", "base", "1", "2"), ("2", "dog", "novel", "0", "0")]
    assert float(rows[0]["AP"]) == pytest.approx(1.0, abs=1e-12) and rows[1]["AP"] == ""
    printed = capsys.readouterr().out
    assert "one prediction per ground truth" in printed and "AP50" in printed


def test_score_counts_the_predictions_that_scored_zero(tmp_path):
    out = tmp_path / "metrics.json"
    zeros = [{**RESULTS[0], "score": 0.0}, {**RESULTS[1], "score": 0}, {**RESULTS[1], "score": 1e-9}]
    assert main(["score", "--gt", write(tmp_path / "gt.json", GT), "--results", write(tmp_path / "results.json", zeros),
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["counts"]["predictions_scored_zero"] == 2


def test_score_burst_says_which_matching_it_used(tmp_path, capsys):
    args = ["score", "--gt", write(tmp_path / "gt.json", GT), "--results", write(tmp_path / "results.json", RESULTS),
            "--flavour", "burst", "--out", str(tmp_path / "burst.json")]
    assert main(args) == 0
    # The duplicate counts as a second true positive under the official BURST rule: recall 2 / 1 GT.
    assert json.loads((tmp_path / "burst.json").read_text())["metrics"]["AR100"] == 2.0
    assert "several predictions may match one ground truth" in capsys.readouterr().out
    assert main(args + ["--strict-matching"]) == 0
    assert json.loads((tmp_path / "burst.json").read_text())["metrics"]["AR100"] == 1.0
    assert "one prediction per ground truth" in capsys.readouterr().out


def test_score_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    gt = write(tmp_path / "gt.json", GT)
    out_dir = tmp_path / "out"
    unknown_video = [dict(RESULTS[0], video_id=7)]
    (tmp_path / "broken.json").write_text("[{")
    for results in (write(tmp_path / "results.json", unknown_video), str(tmp_path / "broken.json")):
        code = main(["score", "--gt", gt, "--results", results, "--out", str(out_dir / "metrics.json")])
        assert code == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("clipvis score: error:") and "\n" not in error
        assert not out_dir.exists() or not any(out_dir.iterdir())


def test_bench_score_runs_on_a_tiny_problem(capsys):
    args = ["bench", "score", "--videos", "3", "--categories", "5", "--per-video", "6", "--frames", "4",
            "--height", "64", "--width", "96"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["videos"] == 3 and report["predictions"] == 18 and report["seconds"] >= 0
    assert 0.0 <= report["AP"] <= 1.0


def test_scores_every_variant_of_an_infer_run_against_a_registered_benchmark(tiny_world, tmp_path):
    from clipvis.cli import main
    from clipvis.files import read_json, write_json

    gt = read_json(tiny_world / "toy" / "toy_lvvis" / "annotations.json")
    perfect = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.9,
                "segmentations": a["segmentations"]} for a in gt["annotations"]]
    infer_dir = tmp_path / "infer"
    write_json(infer_dir / "exact" / "results.json", perfect)
    write_json(infer_dir / "empty" / "results.json", [])
    write_json(infer_dir / "variants.json", {"variants": ["exact", "empty"]})

    code = main(["score", "--benchmark", "toy_lvvis", "--root", str(tiny_world), "--infer-dir", str(infer_dir),
                 "--out", str(tmp_path / "score")])
    assert code == 0
    scores = read_json(tmp_path / "score" / "scores.json")
    assert scores["flavour"] == "lvvis"
    assert abs(scores["variants"]["exact"]["AP"] - 1.0) < 1e-9 and scores["variants"]["empty"]["AP"] == 0.0
    assert (tmp_path / "score" / "exact" / "metrics.per_category.csv").exists()


def test_benchmark_without_public_ground_truth_is_refused(tmp_path, capsys):
    from clipvis.cli import main

    code = main(["score", "--benchmark", "lvvis_test", "--results", "r.json", "--out", str(tmp_path / "m.json")])
    assert code == 2 and "no public ground truth" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def mlflow_runs(store):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{store}")
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_scores_of_variants_are_logged_as_nested_mlflow_runs(tiny_world, tmp_path, monkeypatch):
    from clipvis.config import load_config, save_config
    from clipvis.files import read_json, write_json

    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    gt = read_json(tiny_world / "toy" / "toy_lvvis" / "annotations.json")
    perfect = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.9,
                "segmentations": a["segmentations"]} for a in gt["annotations"]]
    infer_dir = tmp_path / "infer"
    for name, results, overrides in (("exact", perfect, []), ("adjacent", perfect[:1], ["matching.strategy=adjacent"])):
        write_json(infer_dir / name / "results.json", results)
        save_config(load_config("params/toy/default.yaml", overrides), infer_dir / name / "config.yaml")
    write_json(infer_dir / "variants.json", {"variants": ["exact", "adjacent"]})

    assert main(["score", "--benchmark", "toy_lvvis", "--root", str(tiny_world), "--infer-dir", str(infer_dir),
                 "--out", str(tmp_path / "score")]) == 0
    scores = read_json(tmp_path / "score" / "scores.json")["variants"]
    assert scores["exact"]["AP"] > scores["adjacent"]["AP"]  # one track of several found: a lower AP

    runs = {run.info.run_name: run for run in mlflow_runs(store)}
    assert set(runs) == {"score toy_lvvis", "exact", "adjacent"}
    parent = runs["score toy_lvvis"]
    assert parent.data.tags["stage"] == "score" and parent.data.tags["benchmark"] == "toy_lvvis"
    assert "matching.strategy" not in parent.data.params  # the variants differ in it
    assert parent.data.params["matching.topk"] == "3" and "mlflow.parentRunId" not in parent.data.tags

    import mlflow

    for name, strategy in (("exact", "topk"), ("adjacent", "adjacent")):
        run = runs[name]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert (run.data.tags["stage"], run.data.tags["variant"], run.data.tags["benchmark"]) == (
            "score", name, "toy_lvvis")
        assert run.data.params["matching.strategy"] == strategy
        assert run.info.experiment_id == parent.info.experiment_id
        expected = {key: value for key, value in scores[name].items() if value is not None}
        assert {key: run.data.metrics[key] for key in expected} == pytest.approx(expected, abs=1e-12)
        assert not any(key in run.data.metrics for key, value in scores[name].items() if value is None)
        artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        assert artifacts == {"metrics.json", "metrics.per_category.csv"}
    assert mlflow.get_experiment(parent.info.experiment_id).name == "toy/toy"


def test_one_results_file_with_its_config_is_one_mlflow_run(tmp_path, monkeypatch):
    from clipvis.config import load_config, save_config

    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    save_config(load_config("params/toy/default.yaml", ["matching.topk=5"]), tmp_path / "config.yaml")
    assert main(["score", "--gt", write(tmp_path / "gt.json", GT), "--results",
                 write(tmp_path / "results.json", RESULTS), "--out", str(tmp_path / "metrics.json")]) == 0
    [run] = mlflow_runs(store)
    assert run.info.run_name == "score gt.json" and run.data.params["matching.topk"] == "5"
    assert run.data.metrics["AP"] == pytest.approx(1.0, abs=1e-12) and "APn" not in run.data.metrics


def test_results_without_a_saved_config_are_not_logged(tmp_path, monkeypatch):
    store = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    assert main(["score", "--gt", write(tmp_path / "gt.json", GT), "--results",
                 write(tmp_path / "results.json", RESULTS), "--out", str(tmp_path / "metrics.json")]) == 0
    assert not store.exists()


# `clipvis score ARGS` that kills itself (SIGKILL: no finally, no atexit) inside the atomic write of the file
# named argv[1]: "renaming" once the temporary file is whole, before it is renamed onto the output;
# "writing" with half of the text in the temporary file.
KILLED_SCORE = """
import os, signal, sys
from pathlib import Path

import clipvis.files as files
from clipvis.cli import main

name, when = sys.argv[1], sys.argv[2]
replace, write_text = os.replace, Path.write_text

def replace_or_die(source, target, **kwargs):
    if Path(target).name == name:
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(source, target, **kwargs)

def write_text_or_die(self, text, *args, **kwargs):
    if self.name.startswith(f".{name}.") and self.name.endswith(files.TMP_SUFFIX):
        write_text(self, text[:len(text) // 2], *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    return write_text(self, text, *args, **kwargs)

if when == "renaming":
    os.replace = replace_or_die
else:
    Path.write_text = write_text_or_die
sys.exit(main(sys.argv[3:]))
"""


def every_file(folder):
    """{path relative to folder: bytes} of every file under it, hidden ones (temporaries, locks) included."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("name, when", [("metrics.json", "renaming"), ("metrics.per_category.csv", "writing"),
                                        ("scores.json", "renaming")])
def test_score_killed_mid_write_leaves_no_partial_output_and_reruns_to_the_same_bytes(tmp_path, name, when):
    infer_dir, out = tmp_path / "infer", tmp_path / "score"
    for variant, results in (("first", RESULTS), ("second", RESULTS[1:])):
        (infer_dir / variant).mkdir(parents=True)
        write(infer_dir / variant / "results.json", results)
    write(infer_dir / "variants.json", {"variants": ["first", "second"]})
    args = ["score", "--gt", write(tmp_path / "gt.json", GT), "--infer-dir", str(infer_dir), "--out", str(out)]
    assert main(args) == 0
    uninterrupted = every_file(out)
    assert sorted(uninterrupted) == ["first/metrics.json", "first/metrics.per_category.csv", "scores.json",
                                     "second/metrics.json", "second/metrics.per_category.csv"]
    shutil.rmtree(out)

    killed = subprocess.run([sys.executable, "-c", KILLED_SCORE, name, when, *args], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    left = every_file(out)
    temporaries = [path for path in left if Path(path).name.startswith(f".{name}.") and path.endswith(".tmp")]
    assert len(temporaries) == 1 and ".clipvis.lock" in left  # died inside the write, holding the lock
    assert "scores.json" not in left  # what says the folder is done (the workflow's output) is written last
    for path, data in left.items():  # nothing partial under an output's name: each is whole, or missing
        assert Path(path).name.startswith(".") or data == uninterrupted[path], path

    assert main(args) == 0  # the same command again: the stale lock does not stop it
    assert every_file(out) == uninterrupted  # the same bytes; no temporary or lock file left
