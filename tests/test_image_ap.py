"""Image-level AP: COCOeval mask AP with base/novel means, the held-out toy image set, `clipvis eval-images`."""

from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import replace

import numpy as np
import pycocotools.mask as mask_api
import pytest
import torch

from clipvis import cli
from clipvis.evaluation import images
from clipvis.config import InferConfig, ScoringConfig, load_config
from clipvis.data.formats import load_image_gt
from clipvis.toy.generate import dataset_scenes, generate_toy_world
from clipvis.toy.render import render_scene
from clipvis.toy.world import make_categories
from clipvis.commands import eval_images as images_command
from clipvis.evaluation.image_ap import image_ap, segment_image
from clipvis.files import read_json
from clipvis.model.clipvis_model import CLIPVIS
from clipvis.model.checkpoint import save_checkpoint

from conftest import TINY_MODEL, TINY_WORLD, FakeMlflow

WORLD = replace(TINY_WORLD, val_images=3)

# pycocotools under numpy 2 warns on every call; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SIZE = (40, 50)  # (height, width) of the hand-built images
BASE, NOVEL, BASE_WITHOUT_GT = 1, 2, 3
GROUPS = {"APb": {BASE, BASE_WITHOUT_GT}, "APn": {NOVEL}}
def rle(top: int, left: int, height: int, width: int) -> dict:
    mask = np.zeros(SIZE, dtype=np.uint8)
    mask[top:top + height, left:left + width] = 1
    encoded = mask_api.encode(np.asfortranarray(mask))
    return {"size": list(SIZE), "counts": encoded["counts"].decode("ascii")}


def box_gt() -> dict:
    """Image 1: a 10x10 base object; image 2: a 10x10 novel object. Category 3 (base) has no ground truth."""
    images = [{"id": i, "height": SIZE[0], "width": SIZE[1], "file_name": f"{i}.jpg"} for i in (1, 2)]
    annotations = [{"id": 1, "image_id": 1, "category_id": BASE, "segmentation": rle(5, 5, 10, 10),
                    "bbox": [5, 5, 10, 10], "area": 100},
                   {"id": 2, "image_id": 2, "category_id": NOVEL, "segmentation": rle(20, 30, 10, 10),
                    "bbox": [30, 20, 10, 10], "area": 100}]
    categories = [{"id": BASE, "name": "red star", "partition": 0}, {"id": NOVEL, "name": "blue ring", "partition": 2},
                  {"id": BASE_WITHOUT_GT, "name": "green cross", "partition": 1}]
    return {"images": images, "annotations": annotations, "categories": categories}


def result(image_id: int, category_id: int, score: float, segmentation: dict) -> dict:
    return {"image_id": image_id, "category_id": category_id, "score": score, "segmentation": segmentation}


PERFECT = [result(1, BASE, 0.8, rle(5, 5, 10, 10)), result(2, NOVEL, 0.7, rle(20, 30, 10, 10))]


# ---------------------------------------------------------------- AP


def test_perfect_predictions_score_one_in_both_groups():
    # a prediction for a category without ground truth costs nothing
    scored = image_ap(box_gt(), PERFECT + [result(1, BASE_WITHOUT_GT, 0.9, rle(0, 0, 5, 5))], GROUPS)
    assert scored.metrics == pytest.approx({"AP": 1, "AP50": 1, "AP75": 1, "APb": 1, "APn": 1})
    rows = {row["id"]: row for row in scored.per_category}
    assert rows[BASE_WITHOUT_GT]["AP"] is None and rows[BASE_WITHOUT_GT]["num_predictions"] == 1
    assert (rows[NOVEL]["num_gt"], rows[NOVEL]["AP"]) == (1, pytest.approx(1))


def test_a_wrong_class_prediction_lowers_only_its_group():
    # The novel object also predicted as the base category, above the true base prediction: for the base
    # category a false positive comes first, so precision is 1/2 at every recall and every IoU threshold.
    wrong = result(2, BASE, 0.9, rle(20, 30, 10, 10))
    scored = image_ap(box_gt(), PERFECT + [wrong], GROUPS)
    assert scored.metrics == pytest.approx({"AP": 0.75, "AP50": 0.75, "AP75": 0.75, "APb": 0.5, "APn": 1})


def test_iou_thresholds():
    # 9x8 inside the 10x10 base object: IoU 0.72, a match at thresholds .50 to .70 (5 of 10), not at .75
    loose = [result(1, BASE, 0.8, rle(5, 5, 9, 8)), PERFECT[1]]
    scored = image_ap(box_gt(), loose, GROUPS)
    assert scored.metrics == pytest.approx({"AP": 0.75, "AP50": 1, "AP75": 0.5, "APb": 0.5, "APn": 1})


def test_empty_results_score_zero_and_groups_without_ground_truth_are_none():
    scored = image_ap(box_gt(), [], {**GROUPS, "APx": {BASE_WITHOUT_GT}})
    assert scored.metrics == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APb": 0.0, "APn": 0.0, "APx": None}


def test_results_for_unknown_images_are_refused():
    with pytest.raises(ValueError, match=r"results\[0\].image_id: image 7"):
        image_ap(box_gt(), [result(7, BASE, 0.5, rle(0, 0, 2, 2))], GROUPS)


# ---------------------------------------------------------------- segmenting an image


class StubModel:
    """The network's outputs fixed by hand for a 32x32 image: 2 queries, 2 classes, stride-4 masks (8x8).

    Query 0: mask logit +2 on the top-left 4x4 cells (-2 elsewhere), class probabilities (3/4, 1/4), IoU 1.
    Query 1: mask logit +4 on the bottom-right 4x4 cells (-4 elsewhere), class probabilities (3/5, 2/5), IoU 1/2.
    Both: object probability 4/5.
    """

    def preprocess(self, images):
        assert [tuple(image.shape) for image in images] == [(3, 32, 32)]
        return torch.zeros(1, 3, 32, 32)

    def __call__(self, batch, with_aux):
        masks = torch.full((1, 2, 8, 8), -2.0)
        masks[0, 0, :4, :4] = 2.0
        masks[0, 1] = -4.0
        masks[0, 1, 4:, 4:] = 4.0
        return {"pred_masks": masks, "pred_ious": torch.tensor([[[1.0], [0.5]]]),
                "pred_object_logits": torch.tensor([[[np.log(4), 0.0], [np.log(4), 0.0]]]),
                "clip_dense": torch.zeros(1, 4, 1, 1)}

    def class_logits(self, clip_dense, mask_logits, text):
        return torch.tensor([[[np.log(3), 0.0], [np.log(1.5), 0.0]]])


def test_segment_image_scores_selects_and_upsamples_as_the_image_model():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    records = segment_image(StubModel(), image, None, ScoringConfig(detections_per_image=3), InferConfig(32, 32),
                            image_id=5, category_ids=[7, 9])
    # s = (p u o)^1/2: (q0, c0) sqrt(.6), (q1, c0) sqrt(.24), (q0, c1) sqrt(.2), (q1, c1) sqrt(.16) is left out;
    # final = s * mask score, the mean sigmoid over the positive logits: sigmoid(2) for q0, sigmoid(4) for q1
    sigmoid = torch.sigmoid(torch.tensor([2.0, 4.0])).tolist()
    expected = [(7, 0.6 ** 0.5 * sigmoid[0]), (7, 0.24 ** 0.5 * sigmoid[1]), (9, 0.2 ** 0.5 * sigmoid[0])]
    assert [(r["category_id"], r["score"]) for r in records] == [(c, pytest.approx(s)) for c, s in expected]
    assert all(r["image_id"] == 5 and r["segmentation"]["size"] == [32, 32] for r in records)
    top_left, bottom_right = np.zeros((32, 32), dtype=bool), np.zeros((32, 32), dtype=bool)
    top_left[:16, :16] = bottom_right[16:, 16:] = True
    # bilinear x4 puts each edge half-way; at the inner corner three of the four cells are negative
    top_left[15, 15] = bottom_right[16, 16] = False
    decoded = [mask_api.decode(r["segmentation"]).astype(bool) for r in records]
    assert [d.tolist() for d in decoded] == [m.tolist() for m in (top_left, bottom_right, top_left)]


# ---------------------------------------------------------------- the held-out toy images


@pytest.fixture(scope="module")
def world_root(tmp_path_factory):
    """The data root of a tiny toy world with 3 held-out images."""
    root = tmp_path_factory.mktemp("data")
    generate_toy_world(WORLD, root, samples_path=None)
    return root


def test_toy_lvis_val_annotates_every_visible_object_novel_ones_included(world_root):
    gt = load_image_gt(world_root / "toy" / "toy_lvis_val" / "annotations.json")
    categories = read_json(world_root / "toy" / "categories.json")["categories"]
    novel = {c["id"] for c in categories if c["partition"] >= 2}
    assert len(gt["images"]) == WORLD.val_images
    assert gt["categories"][0]["name"] == categories[0]["name"] and len(gt["categories"]) == len(categories)
    assert novel & {a["category_id"] for a in gt["annotations"]}

    cats = make_categories(WORLD.colours, WORLD.shapes, WORLD.novel_fraction, WORLD.seed)
    scenes = dataset_scenes(WORLD, cats, "toy_lvis_val")
    for image, scene in zip(gt["images"], scenes, strict=True):
        (frame,) = render_scene(scene)
        visible = sorted(obj.category_id for obj, mask in zip(scene.objects, frame.visible) if mask.any())
        annotated = sorted(a["category_id"] for a in gt["annotations"] if a["image_id"] == image["id"])
        assert annotated == visible
        assert set(image["neg_category_ids"]) == {c["id"] for c in categories} - set(visible)
        assert (world_root / "toy" / "toy_lvis_val" / "images" / image["file_name"]).is_file()


# ---------------------------------------------------------------- the command


@pytest.fixture
def command_setup(world_root, tmp_path):
    """A random-weight tiny checkpoint and the command's overrides."""
    overrides = TINY_MODEL + [f"data.root={world_root}", f"clip.text_cache={tmp_path / 'text'}", "infer.device=cpu",
                              "scoring.detections_per_image=12"]
    cfg = load_config("params/toy/default.yaml", overrides)
    torch.manual_seed(0)
    checkpoint = tmp_path / "model_final.pt"
    save_checkpoint(checkpoint, CLIPVIS.from_config(cfg.model, cfg.clip), cfg)
    return {"checkpoint": checkpoint, "overrides": overrides}


def parse(argv):
    parser = argparse.ArgumentParser()
    images_command.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def test_eval_images_writes_results_and_metrics(command_setup, world_root, tmp_path, monkeypatch):
    logged = {}
    monkeypatch.setattr(images, "stage_run", lambda cfg, stage, **k: contextlib.nullcontext(FakeMlflow(logged)))
    out = tmp_path / "eval"
    assert images_command.main(parse(["--params", "params/toy/default.yaml", "--checkpoint",
                                      command_setup["checkpoint"], "--out", out, "--set",
                                      *command_setup["overrides"]])) == 0

    gt = load_image_gt(world_root / "toy" / "toy_lvis_val" / "annotations.json")
    results = json.loads((out / "results.json").read_text())
    per_image = {image["id"]: [r for r in results if r["image_id"] == image["id"]] for image in gt["images"]}
    for image in gt["images"]:
        records = per_image[image["id"]]
        assert len(records) == 12  # detections_per_image
        assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
        assert all(r["segmentation"]["size"] == [image["height"], image["width"]] for r in records)
        assert all(0 <= r["score"] <= 1 and 1 <= r["category_id"] <= 30 for r in records)

    report = json.loads((out / "metrics.json").read_text())
    metrics = report["metrics"]
    assert set(metrics) == {"AP", "AP50", "AP75", "APb", "APn"}
    assert all(0 <= value <= 1 for value in metrics.values())
    assert metrics == pytest.approx(image_ap(gt, results, {
        "APb": {c["id"] for c in gt["categories"] if c["partition"] < 2},
        "APn": {c["id"] for c in gt["categories"] if c["partition"] >= 2}}).metrics)
    assert report["counts"]["images"] == WORLD.val_images and report["counts"]["predictions"] == len(results)
    assert {key: logged[key] for key in metrics} == pytest.approx(metrics)
    assert logged["images_per_second"] > 0 and (out / "config.yaml").exists()


def test_bad_dataset_is_a_clear_error(command_setup, tmp_path, capsys):
    def run(dataset):
        return cli.main(["eval-images", "--params", "params/toy/default.yaml", "--checkpoint",
                         str(command_setup["checkpoint"]), "--dataset", dataset, "--out", str(tmp_path / "o"),
                         "--set", *command_setup["overrides"]])

    assert run("toy_lvis_nope") == 2
    error = capsys.readouterr().err
    assert "--dataset" in error and "toy_lvis_nope: unknown dataset" in error and "toy_lvis_val" in error
    assert run("toy_lvvis") == 2
    assert "a video benchmark" in capsys.readouterr().err
    assert run("toy_lvis_train") == 2
    assert "a training set" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
