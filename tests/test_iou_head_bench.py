"""`clipvis bench iou-head`: how well a model's mask-IoU predictions follow the true IoU of its masks."""

import argparse
import json

import numpy as np
import pytest
import torch

from clipvis.bench.iou_head import agreement, best_ious, head_quality
from clipvis.bench.toy import VIDEO_BENCHMARKS
from clipvis.commands import bench
from clipvis.config import load_config
from clipvis.files import read_json
from clipvis.model.checkpoint import save_checkpoint
from clipvis.model.clipvis_model import CLIPVIS
from conftest import TINY_MODEL


def test_each_mask_is_scored_against_the_ground_truth_it_overlaps_most():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # exactly the first object
    masks[1] = True  # the whole frame: half of it is the second object
    truth = torch.zeros(2, 4, 4, dtype=torch.bool)
    truth[0, :2, :2] = True
    truth[1, 2:] = True
    assert best_ious(masks, truth).tolist() == [1.0, 0.5, 0.0]  # the third mask is empty


def test_agreement_separates_ranking_from_calibration():
    true = np.array([0.1, 0.4, 0.7, 0.9])
    halved = agreement(true / 2, true)  # ranks perfectly, too low
    assert halved["spearman"] == 1.0 and halved["mean_abs_error"] == pytest.approx(np.mean(true / 2), abs=1e-4)
    assert agreement(1 - true, true)["spearman"] == -1.0
    dead = agreement(np.zeros(4), true)  # a dead ReLU head: one value for every query
    assert dead["spearman"] is None and dead["mean_abs_error"] == pytest.approx(true.mean(), abs=1e-4)
    assert dead["mean_predicted"] == 0 and dead["mean_true"] == pytest.approx(true.mean(), abs=1e-4)
    assert agreement(np.zeros(0), np.zeros(0)) == {"queries": 0, "spearman": None, "mean_abs_error": None,
                                                   "mean_predicted": None, "mean_true": None}


def test_confident_queries_are_reported_apart():
    predicted, true = np.array([0.9, 0.2, 0.6, 0.1]), np.array([0.8, 0.0, 0.7, 0.3])
    quality = head_quality(predicted, true, objectness=np.array([0.9, 0.2, 0.5, 0.1]))
    assert quality["queries"] == 4 and quality["confident"]["queries"] == 2
    assert quality["confident"]["mean_abs_error"] == pytest.approx(0.1)
    assert quality["confident"]["mean_true"] == pytest.approx(0.75)


def test_bench_iou_head_measures_every_query_of_the_sampled_frames(tiny_world, tmp_path, capsys):
    overrides = TINY_MODEL + [f"data.root={tiny_world}", "infer.min_size=96", f"clip.text_cache={tmp_path / 'text'}"]
    cfg = load_config("params/toy/iou_relu.yaml", overrides)
    checkpoint = tmp_path / "model.pt"
    torch.manual_seed(0)
    save_checkpoint(checkpoint, CLIPVIS.from_config(cfg.model, cfg.clip), cfg)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "iou_head.json"
    args = parser.parse_args(["iou-head", "--checkpoint", str(checkpoint), "--root", str(tiny_world),
                              "--frame-step", "3", "--out", str(out), "--set", *overrides])
    assert bench.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == read_json(out)
    assert (printed["iou_head_input"], printed["iou_activation"], printed["frame_step"]) == ("query", "relu", 3)
    assert list(printed["benchmarks"]) == list(VIDEO_BENCHMARKS)
    for name, quality in printed["benchmarks"].items():
        gt = read_json(tiny_world / "toy" / name / "annotations.json")
        frames = sum(any(a["segmentations"][t] for a in gt["annotations"] if a["video_id"] == video["id"])
                     for video in gt["videos"] for t in range(0, video["length"], 3))
        assert quality["queries"] == frames * cfg.model.num_queries  # every query of every frame with an object
        assert 0 <= quality["mean_true"] <= 1 and 0 <= quality["mean_abs_error"] <= 1
        assert quality["mean_predicted"] >= 0  # ReLU
        assert 0 <= quality["confident"]["queries"] <= quality["queries"]
