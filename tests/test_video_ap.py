"""Video AP on tiny hand-computed cases (see the comments for each expected number)."""

import numpy as np
import pycocotools.mask as mask_api
import pytest

from clipvis.evaluation.video_ap import evaluate_videos

H = W = 16


def box(y0, y1, x0, x1, height=H, width=W):
    """Compressed RLE of a filled rectangle [y0, y1) x [x0, x1)."""
    mask = np.zeros((height, width), dtype=np.uint8, order="F")
    mask[y0:y1, x0:x1] = 1
    encoded = mask_api.encode(mask)
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


def area(rle):
    return None if rle is None else float(mask_api.area(rle))


def dataset(tracks, categories=None, lengths=None, height=H, width=W):
    """Ground truth from tracks (video_id, category_id, masks[, extra fields]); ids 1, 2, ... in order."""
    lengths = lengths or {}
    for video_id, _, masks, *_ in tracks:
        lengths.setdefault(video_id, len(masks))
    annotations = []
    for i, (video_id, category_id, masks, *extra) in enumerate(tracks):
        annotation = {"id": i + 1, "video_id": video_id, "category_id": category_id, "iscrowd": 0,
                      "segmentations": masks, "areas": [area(m) for m in masks]}
        annotation.update(*extra)
        annotations.append(annotation)
    categories = categories or [{"id": c, "name": f"class{c}"} for c in sorted({t[1] for t in tracks})]
    videos = [{"id": v, "width": width, "height": height, "length": n, "file_names": [f"{v}/{t}.jpg" for t in range(n)]}
              for v, n in sorted(lengths.items())]
    return {"videos": videos, "annotations": annotations, "categories": categories}


def pred(video_id, category_id, score, masks):
    return {"video_id": video_id, "category_id": category_id, "score": score, "segmentations": masks}


A = [box(0, 4, 0, 4), box(0, 4, 0, 4)]  # a 2-frame track, 16 px per frame
B = [box(8, 12, 8, 12), box(8, 12, 8, 12)]  # disjoint from A


@pytest.mark.parametrize("flavour", ["lvvis", "ytvis", "burst"])
def test_perfect_prediction_scores_one(flavour):
    metrics = evaluate_videos(dataset([(1, 1, A)]), [pred(1, 1, 0.9, A)], flavour).metrics
    for key in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100"):
        assert metrics[key] == pytest.approx(1.0, abs=1e-12), key
    # No ground truth of medium or large area: those ranges are undefined, not 0.
    assert metrics["APm"] is None and metrics["APl"] is None


@pytest.mark.parametrize("flavour", ["lvvis", "ytvis", "burst"])
def test_missing_frames_enter_the_union(flavour):
    # GT: 4x4 box (16 px) on frames 0-2, absent on frame 3.
    # Prediction: frame 0 same box (I 16, U 16); frame 1 shifted one column (I 12, U 20);
    # frame 2 null (U += 16 of the GT); frame 3 a 2x2 box where the GT is absent (U += 4).
    # IoU = 28 / 56 = 0.5: a match at threshold 0.50 only, so AP = 1/10, AP50 = 1, AP75 = 0.
    gt_masks = [box(0, 4, 0, 4), box(0, 4, 0, 4), box(0, 4, 0, 4), None]
    pred_masks = [box(0, 4, 0, 4), box(0, 4, 1, 5), None, box(10, 12, 10, 12)]
    metrics = evaluate_videos(dataset([(1, 1, gt_masks)]), [pred(1, 1, 0.9, pred_masks)], flavour).metrics
    assert metrics["AP"] == pytest.approx(0.1, abs=1e-12)
    assert metrics["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["AP75"] == 0.0
    assert metrics["AR100"] == pytest.approx(0.1, abs=1e-12)


# Two GT (A, B); predictions: A at 0.9, A again at 0.8, B at 0.7.
# One match per GT: TP, FP, TP -> recall .5, .5, 1; precision 1, .5, 2/3; made monotone 1, 2/3, 2/3.
# Recall points 0.00..0.50 (51 of them) read precision 1, points 0.51..1.00 (50) read 2/3:
ONE_MATCH_AP = (51 * 1.0 + 50 * 2 / 3) / 101  # 0.83498...


@pytest.mark.parametrize("flavour, strict, ap, ar", [
    ("lvvis", False, ONE_MATCH_AP, 1.0),
    ("ytvis", False, ONE_MATCH_AP, 1.0),
    ("burst", True, ONE_MATCH_AP, 1.0),
    # Official BURST: the duplicate also matches A, so TP, TP, TP -> precision 1 everywhere,
    # recall 3 / 2 GT = 1.5.
    ("burst", False, 1.0, 1.5),
])
def test_duplicate_detection(flavour, strict, ap, ar):
    gt = dataset([(1, 1, A), (1, 1, B)])
    results = [pred(1, 1, 0.9, A), pred(1, 1, 0.8, A), pred(1, 1, 0.7, B)]
    scored = evaluate_videos(gt, results, flavour, strict_matching=strict)
    assert scored.metrics["AP"] == pytest.approx(ap, abs=1e-9)
    assert scored.metrics["AR100"] == pytest.approx(ar, abs=1e-12)
    assert ("several predictions" in scored.matching) == (flavour == "burst" and not strict)


def test_category_without_ground_truth_is_left_out_of_the_mean():
    # Category 2 has no GT anywhere: its prediction costs nothing and it is not a 0 in the mean.
    gt = dataset([(1, 1, A)], categories=[{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}])
    scored = evaluate_videos(gt, [pred(1, 1, 0.9, A), pred(1, 2, 0.95, B)])
    assert scored.metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    rows = {row["id"]: row for row in scored.per_category}
    assert rows[2]["AP"] is None and rows[2]["num_gt"] == 0 and rows[2]["num_predictions"] == 1
    assert rows[1]["AP"] == pytest.approx(1.0, abs=1e-12) and rows[1]["num_gt"] == 1


def test_area_ranges():
    # One-frame videos of 300x300: GT of area 100 (small), 22500 (medium), 67600 (large, > 256^2 = 65536).
    # Perfect predictions for the small (score .9) and the large (score .5) one, none for the medium.
    size = {"height": 300, "width": 300}
    small, medium, large = [box(0, 10, 0, 10, **size)], [box(0, 150, 0, 150, **size)], [box(0, 260, 0, 260, **size)]
    gt = dataset([(1, 1, small), (2, 1, medium), (3, 1, large)], **size)
    metrics = evaluate_videos(gt, [pred(1, 1, 0.9, small), pred(3, 1, 0.5, large)]).metrics
    # In each range the other GT are ignored, and so are the predictions matched to them.
    assert metrics["APs"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["APm"] == 0.0
    assert metrics["APl"] == pytest.approx(1.0, abs=1e-12)
    # All: 3 GT, TP TP -> recall 1/3, 2/3 at precision 1: points 0.00..0.66 (67 of 101) read 1.
    assert metrics["AP"] == pytest.approx(67 / 101, abs=1e-12)
    assert metrics["AR100"] == pytest.approx(2 / 3, abs=1e-12)
    assert (metrics["ARs"], metrics["ARm"], metrics["ARl"]) == (1.0, 0.0, 1.0)


def test_area_bounds_are_inclusive_and_lvvis_truncates_gt_areas():
    # The GT's JSON areas (not its masks) decide its range: 16384.7 and 16384.2.
    # LV-VIS truncates each to 16384 -> mean 16384 = 128^2, inside small [0, 128^2] and medium [128^2, 256^2].
    # YTVIS keeps the mean 16384.45 -> outside small (no GT there), inside medium.
    # The prediction (16 px) matches the GT, so it counts wherever the GT does.
    gt = dataset([(1, 1, A, {"areas": [16384.7, 16384.2]})])
    lvvis = evaluate_videos(gt, [pred(1, 1, 0.9, A)], "lvvis").metrics
    ytvis = evaluate_videos(gt, [pred(1, 1, 0.9, A)], "ytvis").metrics
    assert lvvis["APs"] == pytest.approx(1.0, abs=1e-12) and lvvis["APm"] == pytest.approx(1.0, abs=1e-12)
    assert ytvis["APs"] is None and ytvis["APm"] == pytest.approx(1.0, abs=1e-12)


def test_burst_has_no_area_ranges():
    # BURST sets every mean area to 0: small equals all, medium and large have no GT.
    size = {"height": 300, "width": 300}
    large = [box(0, 260, 0, 260, **size)]
    metrics = evaluate_videos(dataset([(1, 1, large)], **size), [pred(1, 1, 0.9, large)], "burst").metrics
    assert metrics["APs"] == pytest.approx(1.0, abs=1e-12)
    assert metrics["APm"] is None and metrics["APl"] is None


def test_max_dets_is_per_video_and_category():
    # Video 1 has two GT and two perfect predictions: AR1 keeps only the top one there -> recall 1/2.
    metrics = evaluate_videos(dataset([(1, 1, A), (1, 1, B)]), [pred(1, 1, 0.9, A), pred(1, 1, 0.8, B)]).metrics
    assert metrics["AR1"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["AR10"] == pytest.approx(1.0, abs=1e-12)
    # Spread over two videos, the top prediction of each counts: AR1 = 1.
    metrics = evaluate_videos(dataset([(1, 1, A), (2, 1, B)]), [pred(1, 1, 0.9, A), pred(2, 1, 0.8, B)]).metrics
    assert metrics["AR1"] == pytest.approx(1.0, abs=1e-12)


def test_only_the_top_100_predictions_of_a_video_and_category_count():
    # 100 higher-scored misses push the one perfect prediction (lowest score) out: recall 0.
    results = [pred(1, 1, 0.5 + i / 1000, B) for i in range(100)] + [pred(1, 1, 0.1, A)]
    metrics = evaluate_videos(dataset([(1, 1, A)]), results).metrics
    assert metrics["AR100"] == 0.0 and metrics["AP"] == 0.0


def test_base_novel_split_lvvis_partition():
    # Category 1 base (partition 0) found perfectly, category 2 novel (partition 2) missed,
    # category 3 novel (partition 3) without GT is left out: APb = 1, APn = 0, AP = (1 + 0) / 2.
    categories = [{"id": 1, "name": "a", "partition": 0}, {"id": 2, "name": "b", "partition": 2},
                  {"id": 3, "name": "c", "partition": 3}]
    gt = dataset([(1, 1, A), (1, 2, B)], categories=categories)
    scored = evaluate_videos(gt, [pred(1, 1, 0.9, A), pred(1, 3, 0.9, B)], "lvvis")
    assert scored.metrics["APb"] == pytest.approx(1.0, abs=1e-12)
    assert scored.metrics["APn"] == 0.0
    assert scored.metrics["AP"] == pytest.approx(0.5, abs=1e-12)
    assert scored.metrics["APc"] is None and scored.metrics["APu"] is None  # no `split` field: no group
    assert [row["group"] for row in scored.per_category] == ["base", "novel", "novel"]


def test_burst_groups_from_frequency_and_split():
    # BURST: base = frequency c/f, novel = r; common / uncommon from `split`.
    categories = [{"id": 1, "name": "a", "frequency": "f", "split": "common"},
                  {"id": 2, "name": "b", "frequency": "r", "split": "uncommon"}]
    gt = dataset([(1, 1, A), (1, 2, B)], categories=categories)
    metrics = evaluate_videos(gt, [pred(1, 1, 0.9, A)], "burst").metrics
    assert metrics["APb"] == pytest.approx(1.0, abs=1e-12) and metrics["APn"] == 0.0
    assert metrics["APc"] == pytest.approx(1.0, abs=1e-12) and metrics["APu"] == 0.0


def test_crowd_ground_truth():
    # LV-VIS: a crowd GT is not ignored and may take several predictions: TP, TP over 1 GT ->
    # precision 1, recall 2. YTVIS: a crowd GT is ignored, so no category has GT: everything undefined.
    gt = dataset([(1, 1, A, {"iscrowd": 1})])
    results = [pred(1, 1, 0.9, A), pred(1, 1, 0.8, A)]
    lvvis = evaluate_videos(gt, results, "lvvis").metrics
    assert lvvis["AP"] == pytest.approx(1.0, abs=1e-12) and lvvis["AR100"] == pytest.approx(2.0)
    assert evaluate_videos(gt, results, "ytvis").metrics["AP"] is None


def test_equal_scores_are_ordered_by_video_id():
    # Same score 0.5: a miss in video 1, a hit in video 2, listed hit first. The official scorer
    # concatenates videos by id before its stable sort, so the miss comes first:
    # precision 0, 1/2 at recall 0, 1 -> monotone 1/2 everywhere -> AP 0.5 (file order would give 1).
    gt = dataset([(2, 1, A)], lengths={1: 2})
    results = [pred(2, 1, 0.5, A), pred(1, 1, 0.5, A)]
    assert evaluate_videos(gt, results).metrics["AP"] == pytest.approx(0.5, abs=1e-12)


def test_equal_iou_goes_to_the_later_ground_truth():
    # One frame. GT a: cols 0-3, GT b: cols 2-5 (rows 0-3). Prediction p (0.9): cols 1-4, IoU 12/20 = 0.6
    # with both; COCOeval's ">=" scan keeps the later one, b. Prediction q (0.8) = a: IoU 1 with a.
    # Thresholds .50, .55, .60: p -> b, q -> a, two TPs: precision 1 at every recall point.
    # Thresholds .65 .. .95 (7): p misses (FP), q -> a: precision 0, 1/2 at recall 0, 1/2 ->
    # monotone 1/2 for recall points 0.00..0.50 (51 of 101), 0 above.
    gt = dataset([(1, 1, [box(0, 4, 0, 4)]), (1, 1, [box(0, 4, 2, 6)])])
    results = [pred(1, 1, 0.9, [box(0, 4, 1, 5)]), pred(1, 1, 0.8, [box(0, 4, 0, 4)])]
    expected = (3 * 1.0 + 7 * (51 * 0.5 / 101)) / 10  # 0.4767...; taking a (the first) would give 0.3282...
    assert evaluate_videos(gt, results).metrics["AP"] == pytest.approx(expected, abs=1e-9)


def test_match_to_ground_truth_id_zero_counts_as_false_positive():
    # COCOeval records the matched GT id and reads 0 as "unmatched", so a perfect match to GT id 0
    # is a false positive in every official scorer.
    gt = dataset([(1, 1, A)])
    gt["annotations"][0]["id"] = 0
    assert evaluate_videos(gt, [pred(1, 1, 0.9, A)]).metrics["AP"] == 0.0


def test_no_predictions():
    scored = evaluate_videos(dataset([(1, 1, A)]), [])
    assert scored.metrics["AP"] == 0.0 and scored.metrics["AR100"] == 0.0
