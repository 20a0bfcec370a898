"""`clipvis bench toy`: CLIP-grid visibility and ground-truth-mask classification on the tiny world, the
oracle-class relabelling, video IoU, and the training-loss trend from MLflow."""

import argparse
import json

import numpy as np
import pytest
import torch

from clipvis.commands import bench
from clipvis.config import load_config, save_config
from clipvis.bench import toy as toy_diagnostics
from clipvis.files import read_json
from clipvis.model.clip_encoder import FrozenCLIP
from conftest import TINY_MODEL
from conftest import rle


def box(top, left, size, shape=(20, 20)):
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + size, left:left + size] = True
    return rle(mask)


@pytest.fixture
def cfg(tiny_world, tmp_path):
    """The tiny model and world; frames upscaled so that the CLIP grid has more than 2 x 2 cells."""
    return load_config("params/toy/default.yaml", TINY_MODEL + [f"data.root={tiny_world}", "infer.min_size=96",
                                                                 f"clip.text_cache={tmp_path / 'text'}"])


def test_ground_truth_masks_count_every_object_and_a_vanished_one_is_wrong(cfg, tiny_world):
    report = toy_diagnostics.ground_truth_masks(cfg, tiny_world, frame_step=1)
    gt = read_json(tiny_world / "toy" / "toy_lvvis" / "annotations.json")
    present = sum(m is not None for a in gt["annotations"] for m in a["segmentations"])
    grid, accuracy = report["clip_grid"]["toy_lvvis"], report["gt_mask_classification"]["toy_lvvis"]
    assert grid["objects"] == present and 0 < grid["visible"] <= present
    assert grid["share"] == round(grid["visible"] / present, 4)
    tracks = sum(any(a["segmentations"]) for a in gt["annotations"])
    assert grid["tracks"] == tracks and grid["visible"] > 0 and 0 < grid["tracks_visible"] <= tracks
    assert grid["tracks_share"] >= grid["share"]  # a track is visible when any of its frames is
    # Objects whose mask vanished count as wrong: overall accuracy = accuracy among the visible x their share.
    assert accuracy["overall"] == pytest.approx(accuracy["of_visible"] * grid["share"], abs=2e-4)
    assert set(accuracy) == {"overall", "base", "novel", "of_visible", "by_area", "errors"}
    assert list(accuracy["by_area"]) == ["0-0.01", "0.01-0.025", "0.025-0.06", "0.06-1"]
    errors = accuracy["errors"]
    assert errors["wrong"] == round(grid["visible"] * (1 - accuracy["of_visible"]))
    if errors["wrong"]:
        assert errors["shape"] + errors["colour"] + errors["both"] == pytest.approx(1, abs=1e-3)
    assert set(report["clip_grid"]) == {"toy_lvvis", "toy_ovis"}


def test_a_mask_survives_the_clip_grid_only_when_it_covers_a_cell_centre():
    clip = FrozenCLIP("clipvis_toy_rn", None)
    masks = torch.zeros(3, 96, 128, dtype=torch.bool)
    masks[0, 24:72, 24:72] = True  # a large square over several cell centres (16 + 32 k)
    masks[1, 0:8, 0:8] = True  # a small square in a corner, between the centres
    masks[2, 10:22, 42:54] = True  # a small square on the centre (16, 48)
    logits = toy_diagnostics.ground_truth_logits(masks, (96, 128), (96, 128))
    assert logits.shape == (3, 24, 32) and logits.min() >= -1 and logits.max() <= 1
    dense = clip.features(torch.zeros(1, 3, 96, 128))["clip_dense"]
    _, valid = clip.pool_masks(dense, logits[None])
    assert valid[0].tolist() == [True, False, True]


def test_ground_truth_masks_resize_with_their_frame():
    masks = torch.zeros(1, 48, 60, dtype=torch.bool)
    masks[0, :24] = True  # the top half
    logits = toy_diagnostics.ground_truth_logits(masks, (96, 120), (96, 128))
    assert logits.shape == (1, 24, 32)
    assert (logits[0, :12, :30] > 0).all() and (logits[0, 12:] < 0).all() and (logits[0, :, 30:] == -1).all()


def test_video_iou_counts_frames_where_only_one_track_is_present():
    prediction = [box(0, 0, 10), box(0, 0, 4), None]
    truth = [box(0, 0, 5), None, box(0, 0, 2)]
    # frame 0: I = 25, U = 100; frame 1: only the prediction, U += 16; frame 2: only the truth, U += 4
    assert toy_diagnostics.video_iou(prediction, truth) == pytest.approx(25 / 120)
    assert toy_diagnostics.video_iou([None, None], [None, None]) == 0.0


def test_oracle_class_labels_each_track_with_its_best_ground_truth_and_counts_duplicates_once():
    gt = {"annotations": [
        {"video_id": 1, "category_id": 3, "segmentations": [box(0, 0, 10), box(0, 0, 10)]},
        {"video_id": 1, "category_id": 4, "segmentations": [box(12, 12, 6), None]},
        {"video_id": 2, "category_id": 5, "segmentations": [box(0, 0, 5), box(0, 0, 5)]},
    ]}
    on_first = [box(0, 0, 9), box(0, 0, 10)]
    results = [
        {"video_id": 1, "category_id": 4, "score": 0.9, "segmentations": on_first},
        {"video_id": 1, "category_id": 5, "score": 0.5, "segmentations": on_first},  # the same track again
        {"video_id": 1, "category_id": 3, "score": 0.7, "segmentations": [box(12, 12, 5), box(12, 12, 5)]},
        {"video_id": 2, "category_id": 4, "score": 0.6, "segmentations": [box(15, 15, 3), box(15, 15, 3)]},
    ]
    relabelled = toy_diagnostics.oracle_class_results(toy_diagnostics.TrackOverlaps(gt, results))
    assert [(r["video_id"], r["category_id"], r["score"]) for r in relabelled] == [(1, 3, 0.9), (1, 4, 0.7),
                                                                                  (2, 4, 0.6)]


def test_track_classification_takes_the_best_scored_prediction_that_finds_each_track():
    gt = {"annotations": [
        {"video_id": 1, "category_id": 3, "segmentations": [box(0, 0, 10), box(0, 0, 10)]},
        {"video_id": 1, "category_id": 4, "segmentations": [box(12, 12, 6), None]},
        {"video_id": 2, "category_id": 5, "segmentations": [box(0, 0, 5), box(0, 0, 5)]},
        {"video_id": 2, "category_id": 4, "segmentations": [box(14, 14, 4), box(14, 14, 4)]},
    ]}
    results = [
        {"video_id": 1, "category_id": 4, "score": 0.9, "segmentations": [box(0, 0, 9), box(0, 0, 10)]},  # finds 3, wrong
        {"video_id": 1, "category_id": 3, "score": 0.8, "segmentations": [box(0, 0, 10), box(0, 0, 10)]},  # second
        {"video_id": 1, "category_id": 4, "score": 0.7, "segmentations": [box(12, 12, 6), None]},  # finds 4, right
        {"video_id": 2, "category_id": 5, "score": 0.6, "segmentations": [box(0, 0, 2), box(0, 0, 2)]},  # IoU 0.16
        {"video_id": 2, "category_id": 4, "score": 0.5, "segmentations": [box(14, 14, 4), None]},  # IoU 0.5: found
    ]
    report = toy_diagnostics.track_classification(toy_diagnostics.TrackOverlaps(gt, results), novel={4})
    assert report["tracks"] == 4 and report["found"] == 0.75
    assert report["top1_of_found"] == {"overall": round(2 / 3, 4), "base": 0.0, "novel": 1.0}


def test_frame_recall_counts_each_object_in_each_frame_by_its_size():
    gt = {"annotations": [
        {"video_id": 1, "category_id": 3, "segmentations": [box(0, 0, 10), box(0, 0, 10)]},  # 25 % of the frame
        {"video_id": 1, "category_id": 4, "segmentations": [box(12, 12, 3), None]},  # 2.25 %
    ]}
    results = [
        {"video_id": 1, "category_id": 3, "score": 0.9, "segmentations": [box(0, 0, 10), None]},
        {"video_id": 1, "category_id": 4, "score": 0.8, "segmentations": [box(12, 12, 2), box(0, 0, 4)]},  # IoU 4/9, 0.16
    ]
    report = toy_diagnostics.frame_recall(toy_diagnostics.TrackOverlaps(gt, results))
    assert report["objects"] == 3 and report["found"] == round(1 / 3, 4)
    assert report["found_by_area"] == {"0-0.01": None, "0.01-0.025": 0.0, "0.025-0.06": None, "0.06-1": 0.5}


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.parametrize("losses, falling", [([8.0, 6.0, 5.0, 4.0, 3.5, 3.0, 2.5, 2.2, 2.0, 1.8, 1.5, 1.2], True),
                                             ([8.0, 6.0, 5.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.01], False)])
def test_training_trend_says_whether_the_loss_still_falls(mlflow_store, tmp_path, losses, falling):
    from clipvis.tracking import stage_run

    cfg = load_config()
    save_config(cfg, tmp_path / "train" / "config.yaml")
    with stage_run(cfg, "train") as mlflow:
        for step, loss in enumerate(losses, start=1):
            mlflow.log_metrics({"total": loss}, step=10 * step)
    trend = toy_diagnostics.training_trend(tmp_path / "train", "toy")
    assert trend["iterations"] == 120 and trend["final_loss"] == losses[-1]
    assert trend["previous_loss"] == losses[-2] and trend["still_falling"] is falling


def test_bench_toy_prints_the_diagnostics_as_json(tiny_world, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "diagnostics.json"
    args = parser.parse_args(["toy", "--root", str(tiny_world), "--frame-step", "6", "--out", str(out),
                              "--set", *TINY_MODEL, f"clip.text_cache={tmp_path / 'text'}", "infer.min_size=96"])
    assert bench.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == read_json(out) and printed["frame_step"] == 6
    assert set(printed) == {"clip", "clip_dense_stride", "infer_size", "frame_step", "clip_grid",
                            "gt_mask_classification"}
    assert printed["clip_dense_stride"] == 16


def test_ground_truth_errors_are_told_apart_by_colour_and_shape():
    vocabulary = [{"id": 1, "colour": "red", "shape": "star"}, {"id": 2, "colour": "red", "shape": "ring"},
                  {"id": 3, "colour": "blue", "shape": "star"}, {"id": 4, "colour": "blue", "shape": "ring"}]
    truth, predicted = np.array([1, 1, 1, 2, 4]), np.array([2, 3, 4, 1, 2])
    kinds = toy_diagnostics.error_kinds(vocabulary, truth, predicted)
    assert kinds == {"wrong": 5, "shape": 0.4, "colour": 0.4, "both": 0.2}
    assert toy_diagnostics.error_kinds(vocabulary, np.array([], dtype=int), np.array([], dtype=int)) == {
        "wrong": 0, "shape": None, "colour": None, "both": None}


def test_by_area_groups_objects_by_their_share_of_the_frame():
    flags = np.array([True, False, True, True, False])
    shares = [0.005, 0.02, 0.02, 0.5, 0.06]  # a bound belongs to the group above it
    assert toy_diagnostics.by_area(flags, shares) == {"0-0.01": 1.0, "0.01-0.025": 0.5, "0.025-0.06": None,
                                                      "0.06-1": 0.5}
