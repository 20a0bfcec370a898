import json

import numpy as np
import pycocotools.mask as mask_api
import pytest

from clipvis.data import formats
from clipvis.data.formats import (BadRLE, JsonChecker, load_image_gt, load_video_gt, load_video_results,
                                  rle_areas, write_video_results)
from clipvis.errors import InputError

HEIGHT, WIDTH = 6, 5


def box_mask(top, bottom, left, right, height=HEIGHT, width=WIDTH):
    mask = np.zeros((height, width), np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


def compressed(mask):
    rle = mask_api.encode(np.asfortranarray(mask))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def decode(rle):
    return mask_api.decode(rle)


def write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def video_gt():
    """Video 7 (6 x 5, 3 frames) with one annotation of every segmentation kind."""
    return {
        "videos": [{"id": 7, "width": WIDTH, "height": HEIGHT, "length": 3,
                    "file_names": ["v/0.jpg", "v/1.jpg", "v/2.jpg"]}],
        "categories": [{"id": 1, "name": "cat", "partition": 0}, {"id": 2, "name": "dog", "partition": 2}],
        "annotations": [
            {"id": 1, "video_id": 7, "category_id": 1, "iscrowd": 0,
             "segmentations": [
                 [[1, 1, 3, 1, 3, 4, 1, 4], [0, 0, 1, 1]],  # a rectangle (the 2-point polygon is dropped)
                 {"size": [HEIGHT, WIDTH], "counts": [7, 3, 20]},  # column-major: column 1, rows 1-3
                 compressed(box_mask(4, 6, 2, 5)),
             ]},
            {"id": 2, "video_id": 7, "category_id": 2,
             "segmentations": [None, [[0, 0, 2, 2]], compressed(box_mask(0, 1, 0, 5))],
             "bboxes": [None, None, [0, 0, 5, 1]], "areas": [None, None, 5]},
        ],
    }


def expect_error(call, path, field, problem_part=""):
    with pytest.raises(InputError) as caught:
        call()
    error = caught.value
    assert error.source == str(path)
    assert error.field == field
    assert problem_part in error.problem
    assert str(path) in str(error) and field in str(error)
    return error


def test_video_gt_normalises_every_segmentation_kind(tmp_path):
    gt = load_video_gt(write(tmp_path, "gt.json", video_gt()))
    first, second = gt["annotations"]
    for rle in first["segmentations"] + [second["segmentations"][2]]:
        assert set(rle) == {"size", "counts"} and rle["size"] == [HEIGHT, WIDTH]
        assert isinstance(rle["counts"], str)
    assert (decode(first["segmentations"][0]) == box_mask(1, 4, 1, 3)).all()
    assert (decode(first["segmentations"][1]) == box_mask(1, 4, 1, 2)).all()
    assert (decode(first["segmentations"][2]) == box_mask(4, 6, 2, 5)).all()
    assert first["areas"] == [6, 3, 6]  # computed: the file has none
    assert second["segmentations"][:2] == [None, None]  # null, and only a polygon under 3 points
    assert second["areas"] == [None, None, 5]  # kept from the file


def test_bytes_counts_become_str():
    rle = compressed(box_mask(0, 2, 0, 2))
    checker = JsonChecker("memory")
    out = checker.mask({"size": rle["size"], "counts": rle["counts"].encode()}, "m", HEIGHT, WIDTH, "video 1")
    checker.check_masks()
    assert out == rle


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text('{"videos": [')
    error = expect_error(lambda: load_video_gt(path), path, "line 1 column 13", "malformed JSON")
    assert "gt.json" in str(error)


@pytest.mark.parametrize("change, field, problem", [
    (lambda gt: gt["videos"][0].pop("height"), "videos[0].height", "missing"),
    (lambda gt: gt["videos"][0].update(length=4), "videos[0].file_names", "has 3 entries, length is 4"),
    (lambda gt: gt["annotations"][1].update(id=1), "annotations[1].id", "duplicate id 1"),
    (lambda gt: gt["annotations"][1].update(video_id=8), "annotations[1].video_id", "video 8 does not exist"),
    (lambda gt: gt["annotations"][1].update(category_id=3), "annotations[1].category_id",
     "category 3 does not exist"),
    (lambda gt: gt["annotations"][0]["segmentations"].pop(), "annotations[0].segmentations",
     "has 2 frames, video 7 has 3"),
    (lambda gt: gt["annotations"][0]["segmentations"].__setitem__(2, compressed(box_mask(0, 1, 0, 1, 100, 90))),
     "annotations[0].segmentations[2]", "size [100, 90] disagrees with video 7 (height 6, width 5)"),
    (lambda gt: gt["annotations"][0]["segmentations"][2].update(counts="0"),
     "annotations[0].segmentations[2]", "covers 0 pixels"),
    (lambda gt: gt["annotations"][0]["segmentations"][1].update(counts=[7, 3, 2]),
     "annotations[0].segmentations[1].counts", "summing to 30"),
    (lambda gt: gt["annotations"][1]["bboxes"].__setitem__(2, [0, 0, 5]), "annotations[1].bboxes[2]",
     "expected [x, y, width, height] or null"),
    (lambda gt: gt["categories"][1].update(partition=5), "categories[1].partition", "expected 0, 1, 2 or 3"),
])
def test_bad_video_gt_names_file_and_field(tmp_path, change, field, problem):
    gt = video_gt()
    change(gt)
    path = write(tmp_path, "gt.json", gt)
    expect_error(lambda: load_video_gt(path), path, field, problem)


def results():
    return [{"video_id": 7, "category_id": 2, "score": 0.9,
             "segmentations": [compressed(box_mask(0, 2, 0, 2)), None,
                               {"size": [HEIGHT, WIDTH], "counts": [0, 30]}]}]


def test_results_are_normalised_and_round_trip(tmp_path):
    gt = load_video_gt(write(tmp_path, "gt.json", video_gt()))
    loaded = load_video_results(write(tmp_path, "results.json", results()), gt)
    assert loaded[0]["score"] == 0.9 and loaded[0]["segmentations"][1] is None
    assert (decode(loaded[0]["segmentations"][0]) == box_mask(0, 2, 0, 2)).all()
    assert decode(loaded[0]["segmentations"][2]).all()  # uncompressed RLE: all 30 pixels on
    assert loaded[0]["areas"] == [4, None, 30]
    write_video_results(tmp_path / "out" / "results.json", loaded)
    assert load_video_results(tmp_path / "out" / "results.json", gt) == loaded
    assert load_video_results(write(tmp_path, "empty.json", []), gt) == []


@pytest.mark.parametrize("change, field, problem", [
    (lambda r: r.update(video_id=99), "[0].video_id", "ground-truth video 99 does not exist"),
    (lambda r: r.update(category_id=5), "[0].category_id", "ground-truth category 5 does not exist"),
    (lambda r: r.update(score="high"), "[0].score", 'expected a finite number, got "high"'),
    (lambda r: r["segmentations"].pop(), "[0].segmentations", "has 2 frames, video 7 has 3"),
    (lambda r: r["segmentations"].__setitem__(1, compressed(box_mask(0, 1, 0, 1, 5, 5))), "[0].segmentations[1]",
     "size [5, 5] disagrees with video 7 (height 6, width 5)"),
    (lambda r: r["segmentations"][0].update(counts=r["segmentations"][0]["counts"] + "z"),
     "[0].segmentations[0]", "characters outside the RLE alphabet"),
    (lambda r: r["segmentations"].__setitem__(1, [[0, 0, 2, 0, 2, 2]]), "[0].segmentations[1]",
     "expected an RLE object or null"),
])
def test_bad_results_name_file_and_field(tmp_path, change, field, problem):
    gt = load_video_gt(write(tmp_path, "gt.json", video_gt()))
    bad = results()
    change(bad[0])
    path = write(tmp_path, "results.json", bad)
    expect_error(lambda: load_video_results(path, gt), path, field, problem)


def image_gt():
    """LVIS/COCO-style: image 3 (6 x 5) with a polygon, a crowd RLE, and a mask-less annotation."""
    return {
        "images": [{"id": 3, "width": WIDTH, "height": HEIGHT, "neg_category_ids": [2],
                    "not_exhaustive_category_ids": []}],
        "categories": [{"id": 1, "name": "cat", "frequency": "f", "synonyms": ["cat"]},
                       {"id": 2, "name": "dog", "frequency": "r", "synonyms": ["dog"]}],
        "annotations": [
            {"id": 10, "image_id": 3, "category_id": 1, "bbox": [1, 1, 2, 3], "area": 6.0,
             "segmentation": [[1, 1, 3, 1, 3, 4, 1, 4]]},
            {"id": 11, "image_id": 3, "category_id": 2, "bbox": [1, 1, 1, 3], "iscrowd": 1,
             "segmentation": {"size": [HEIGHT, WIDTH], "counts": [7, 3, 20]}},
            {"id": 12, "image_id": 3, "category_id": 2, "bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 1, 1]]},
        ],
    }


def test_image_gt_normalises_masks_and_drops_maskless(tmp_path):
    gt = load_image_gt(write(tmp_path, "lvis.json", image_gt()))
    assert [a["id"] for a in gt["annotations"]] == [10, 11]
    polygon, crowd = gt["annotations"]
    assert (decode(polygon["segmentation"]) == box_mask(1, 4, 1, 3)).all() and polygon["area"] == 6.0
    assert (decode(crowd["segmentation"]) == box_mask(1, 4, 1, 2)).all() and crowd["area"] == 3


@pytest.mark.parametrize("change, field, problem", [
    (lambda gt: gt["images"][0].update(neg_category_ids=[9]), "images[0].neg_category_ids[0]",
     "category 9 does not exist"),
    (lambda gt: gt["annotations"][0].update(image_id=4), "annotations[0].image_id", "image 4 does not exist"),
    (lambda gt: gt["annotations"][1]["segmentation"].update(size=[5, 6]), "annotations[1].segmentation",
     "size [5, 6] disagrees with image 3 (height 6, width 5)"),
    (lambda gt: gt["annotations"][0].update(segmentation=[["a", 1, 2, 1, 2, 2]]), "annotations[0].segmentation[0]",
     "a polygon must be a flat list of numbers"),
    (lambda gt: gt["annotations"][0].pop("bbox"), "annotations[0].bbox", "missing"),
    (lambda gt: gt["categories"][0].update(frequency="x"), "categories[0].frequency", "expected 'f', 'c' or 'r'"),
])
def test_bad_image_gt_names_file_and_field(tmp_path, change, field, problem):
    gt = image_gt()
    change(gt)
    path = write(tmp_path, "lvis.json", gt)
    expect_error(lambda: load_image_gt(path), path, field, problem)


def test_rle_areas_match_decoded_masks_across_batches(monkeypatch):
    monkeypatch.setattr(formats, "RLE_BATCH", 7)  # batch borders fall inside the list
    rng = np.random.default_rng(0)
    masks = [rng.random((int(h), int(w))) < rng.random() for h, w in rng.integers(1, 40, (30, 2))]
    masks += [np.ones((3, 4), bool), np.zeros((3, 4), bool), box_mask(0, 2000, 5, 6, 3000, 20).astype(bool)]
    rles = [compressed(mask.astype(np.uint8)) for mask in masks]
    assert rle_areas(rles).tolist() == [int(mask.sum()) for mask in masks]
    assert rle_areas([]).tolist() == []


@pytest.mark.parametrize("counts, problem", [
    ("", "empty"), ("6", "covers 6 pixels, size [3, 4] has 12"), ("9g", "ends in the middle of a number"),
    ("9~", "characters outside"), ("<@", "negative run length"),
])
def test_rle_areas_reject_malformed_counts_by_index(counts, problem):
    good = compressed(np.ones((3, 4), np.uint8))
    with pytest.raises(BadRLE) as caught:
        rle_areas([good, good, {"size": [3, 4], "counts": counts}, good])
    assert caught.value.index == 2 and problem in caught.value.problem
