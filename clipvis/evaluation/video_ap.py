"""Video AP/AR, identical to the official LV-VIS, YouTube-VIS and BURST scorers, vectorised.

The official scorers (LVVISeval, YTVOSeval, BURSTeval: COCOeval run on whole videos) share:

- video IoU of a prediction d and a ground truth g: I = sum of |d & g| over the frames where both are
  present (not None); U = sum of |d | g| there, plus |g| or |d| on frames where only one is present;
  IoU = I / U, or 0 if U = 0;
- IoU thresholds .50:.05:.95, 101 recall points, maxDets 1/10/100 per (video, category), area ranges
  all, small [0, 128^2], medium [128^2, 256^2], large [256^2, 1e10] (bounds inclusive) on a track's mean
  area over its frames with a non-null, non-zero area (ground truth: the JSON `areas`; predictions:
  their masks);
- per (video, category): predictions ranked by score (stable), the first 100 kept; each in turn takes
  the unmatched ground truth of highest IoU >= threshold (the last one on ties), preferring ground
  truth inside the area range; an unmatched prediction outside the range is ignored; then COCOeval's
  accumulate and summarize;
- a category without ground truth (in that area range) is -1 and left out of every mean.

They differ in (`flavour`):

- `lvvis`: ground-truth per-frame areas int-truncated before the mean; a crowd ground truth is not
  ignored but may be matched by several predictions;
- `ytvis`: areas as they are; a crowd ground truth is ignored;
- `burst`: every mean area is 0 (small = all; medium and large are empty), and the "already matched"
  check is off, so several predictions may match one ground truth and recall can exceed 1;
  `strict_matching=True` turns the check back on.

Kept quirk of all three: a prediction matched to a ground truth whose `id` is 0 counts as a false
positive (COCOeval stores the matched id, and reads 0 as "unmatched").

Groups: base/novel from each category's `partition` (LV-VIS: 0/1 base, 2/3 novel) or, without one, its
`frequency` (BURST: c/f base, r novel); common/uncommon from `split` (BURST). A group mean (APb, APn,
APc, APu) is over its categories with ground truth, as the official means over entries > -1; None
when there is none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_api
from tqdm import tqdm

log = logging.getLogger(__name__)

FLAVOURS = ("lvvis", "ytvis", "burst")
# Built exactly as the official Params, so the values (and the AP50 / AP75 look-ups) are identical.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)  # [T]
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)  # [R]
MAX_DETS = (1, 10, 100)  # [M]
AREA_NAMES = ("all", "small", "medium", "large")
AREA_RANGES = np.array([[0, 1e5 ** 2], [0, 128 ** 2], [128 ** 2, 256 ** 2], [256 ** 2, 1e5 ** 2]])  # [A, 2]
GROUPS = ("APb", "APn", "APc", "APu")


@dataclass
class VideoAPResult:
    metrics: dict[str, float | None]  # AP, AP50, ..., APb, APn, APc, APu as fractions; None if undefined
    per_category: list[dict]  # one row per category, by id
    flavour: str
    matching: str  # the matching rule used, in words
    category_ids: list[int]  # [K] ascending
    precision: np.ndarray  # [T, R, K, A, M]; -1 where the category has no ground truth in that range
    recall: np.ndarray  # [T, K, A, M]; -1 likewise


@dataclass
class _GroundTruth:
    """Ground-truth tracks sorted by (category, video), file order within; one row each."""
    category: np.ndarray  # [G] category index
    video: np.ndarray  # [G] video rank
    ids: np.ndarray  # [G] annotation ids
    crowd: np.ndarray  # [G] bool
    mean_area: np.ndarray  # [G] float, for the area ranges
    masks: list  # [G] lists of RLE | None, one per frame


@dataclass
class _Predictions:
    """The kept predictions (first 100 per video and category by score), sorted by (category, video, rank)."""
    category: np.ndarray  # [N] category index
    video: np.ndarray  # [N] video rank
    score: np.ndarray  # [N] float
    rank: np.ndarray  # [N] place within its (video, category) by score, 0 first
    masks: list  # [N] lists of RLE | None, one per frame


def matching_rule(flavour: str, strict_matching: bool) -> str:
    if flavour == "burst" and not strict_matching:
        return "BURST official: several predictions may match one ground truth (duplicates are true positives)"
    return "one prediction per ground truth (a crowd ground truth may take several)"


def evaluate_videos(gt: dict, results: list[dict], flavour: str = "lvvis",
                    strict_matching: bool = False) -> VideoAPResult:
    """Score YTVIS-style results against ground truth, as the official scorer of `flavour` does.

    `gt` and `results` are the structures of `clipvis.data.formats.load_video_gt` / `load_video_results`:
    every mask a compressed RLE dict or None, one per frame of its video.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    matching = matching_rule(flavour, strict_matching)
    log.info("scoring %d predictions, flavour %s; matching: %s", len(results), flavour, matching)
    videos = {video["id"]: video for video in gt["videos"]}
    video_rank = {video_id: rank for rank, video_id in enumerate(sorted(videos))}
    category_ids = sorted(category["id"] for category in gt["categories"])
    category_index = {category_id: k for k, category_id in enumerate(category_ids)}
    ground_truth = _ground_truth(gt["annotations"], videos, video_rank, category_index, flavour)
    predictions = _predictions(results, videos, video_rank, category_index)

    gt_ignored = _outside(ground_truth.mean_area)  # [G, A]
    if flavour == "ytvis":
        gt_ignored |= ground_truth.crowd[:, None]
    det_present = _Present.of(predictions.masks)
    det_mean_area = det_present.mean_nonzero_area(len(predictions.category))
    if flavour == "burst":
        det_mean_area[:] = 0
    true_match, on_ignored = _match(ground_truth, gt_ignored, predictions, det_present, len(videos),
                                    one_match_per_gt=flavour != "burst" or strict_matching)
    # COCOeval: an unmatched prediction (or one matched to ground-truth id 0) outside the range is ignored.
    det_ignored = on_ignored | (~true_match & _outside(det_mean_area)[:, :, None])  # [N, A, T]

    n_categories = len(category_ids)
    n_positive = np.stack([np.bincount(ground_truth.category[~gt_ignored[:, a]], minlength=n_categories)
                           for a in range(len(AREA_RANGES))])  # [A, K]
    order = np.lexsort((predictions.rank, predictions.video, -predictions.score, predictions.category))
    precision, recall = _accumulate(true_match & ~det_ignored, ~true_match & ~det_ignored,
                                    predictions.category, predictions.rank, order, n_positive)

    categories = sorted(gt["categories"], key=lambda category: category["id"])
    groups = {name: [category_index[c["id"]] for c in gt["categories"] if _group(c, name)] for name in GROUPS}
    metrics = _summaries(precision, recall, groups)
    per_category = _per_category_rows(categories, precision,
                                      np.bincount(ground_truth.category, minlength=n_categories),
                                      np.bincount(predictions.category, minlength=n_categories))
    return VideoAPResult(metrics, per_category, flavour, matching, category_ids, precision, recall)


def _ground_truth(annotations: list[dict], videos: dict, video_rank: dict, category_index: dict,
                  flavour: str) -> _GroundTruth:
    kept = [a for a in annotations if a["video_id"] in video_rank and a["category_id"] in category_index]
    _check_lengths(kept, videos, "ground truth")
    category = np.array([category_index[a["category_id"]] for a in kept], dtype=np.int64)
    video = np.array([video_rank[a["video_id"]] for a in kept], dtype=np.int64)
    order = np.lexsort((video, category))  # stable: file order within each (category, video)
    kept = [kept[i] for i in order]
    return _GroundTruth(
        category=category[order], video=video[order],
        ids=np.array([a["id"] for a in kept], dtype=np.int64),
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in kept], dtype=bool),
        mean_area=np.array([_gt_mean_area(a["areas"], flavour) for a in kept], dtype=np.float64),
        masks=[a["segmentations"] for a in kept])


def _gt_mean_area(areas: list, flavour: str) -> float:
    """Mean of the non-null, non-zero per-frame areas (int-truncated for LV-VIS), 0 if none; 0 for BURST."""
    if flavour == "burst":
        return 0.0
    present = [area for area in areas if area]
    if flavour == "lvvis":
        present = [int(area) for area in present]
    return float(np.array(present, dtype=np.float64).mean()) if present else 0.0


def _predictions(results: list[dict], videos: dict, video_rank: dict, category_index: dict) -> _Predictions:
    unknown = [r for r in results if r["video_id"] not in video_rank or r["category_id"] not in category_index]
    if unknown:
        raise ValueError(f"{len(unknown)} results name a video or category that the ground truth lacks, "
                         f"e.g. video {unknown[0]['video_id']}, category {unknown[0]['category_id']}")
    _check_lengths(results, videos, "results")
    n = len(results)
    category = np.array([category_index[r["category_id"]] for r in results], dtype=np.int64)
    video = np.array([video_rank[r["video_id"]] for r in results], dtype=np.int64)
    score = np.array([r["score"] for r in results], dtype=np.float64)
    # Within a (video, category): by score, ties in file order (COCOeval's mergesort on -score).
    order = np.lexsort((np.arange(n), -score, video, category))
    group_key = (category * len(video_rank) + video)[order]
    rank = np.arange(n) - _run_starts(group_key)
    order, rank = order[rank < MAX_DETS[-1]], rank[rank < MAX_DETS[-1]]
    return _Predictions(category=category[order], video=video[order], score=score[order], rank=rank,
                        masks=[results[i]["segmentations"] for i in order])


def _check_lengths(tracks: list[dict], videos: dict, what: str) -> None:
    """Every track has one mask entry per frame of its video (the loaders guarantee it)."""
    for track in tracks:
        if len(track["segmentations"]) != videos[track["video_id"]]["length"]:
            raise ValueError(f"{what}: a track of video {track['video_id']} has {len(track['segmentations'])} "
                             f"frames, the video has {videos[track['video_id']]['length']}")


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """For each element of a sorted key array, the index where its run of equal keys starts."""
    new_run = np.ones(len(keys), dtype=bool)
    new_run[1:] = keys[1:] != keys[:-1]
    return np.maximum.accumulate(np.where(new_run, np.arange(len(keys)), 0))


def _outside(mean_area: np.ndarray) -> np.ndarray:
    """[N, A] whether each mean area lies outside each area range (bounds inclusive)."""
    return (mean_area[:, None] < AREA_RANGES[:, 0]) | (mean_area[:, None] > AREA_RANGES[:, 1])


# pycocotools 2.0.11 `area` fails on more than 255 masks at once under NumPy 2 (it sizes a uint8 array by the count).
AREA_BATCH = 255


def coco_rle_areas(rles: list[dict]) -> np.ndarray:
    """[E] pixel count of each compressed RLE, int64, by pycocotools (no validation: the loaders did it)."""
    batches = [mask_api.area(rles[i:i + AREA_BATCH]) for i in range(0, len(rles), AREA_BATCH)]
    return np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, dtype=np.int64)


@dataclass
class _Present:
    """Every non-null mask of a list of tracks, one entry each."""
    track: np.ndarray  # [E] track row
    frame: np.ndarray  # [E] frame index
    rles: list  # [E] compressed RLE
    area: np.ndarray  # [E] pixel count

    @classmethod
    def of(cls, masks: list[list]) -> _Present:
        tracks, frames, rles = [], [], []
        for track, frame_masks in enumerate(masks):
            present = [t for t, rle in enumerate(frame_masks) if rle is not None]
            tracks.extend([track] * len(present))
            frames.extend(present)
            rles.extend(frame_masks[t] for t in present)
        return cls(np.array(tracks, dtype=np.int64), np.array(frames, dtype=np.int64), rles, coco_rle_areas(rles))

    def area_sum(self, n_tracks: int) -> np.ndarray:
        """[n_tracks] summed area over present frames."""
        return np.bincount(self.track, weights=self.area, minlength=n_tracks)

    def mean_nonzero_area(self, n_tracks: int) -> np.ndarray:
        """[n_tracks] mean of the non-zero areas, 0 if none (as the official loadRes)."""
        nonzero = self.area > 0
        total = np.bincount(self.track[nonzero], weights=self.area[nonzero], minlength=n_tracks)
        count = np.bincount(self.track[nonzero], minlength=n_tracks)
        return np.where(count > 0, total / np.maximum(count, 1), 0.0)

    def select(self, key: np.ndarray) -> tuple[np.ndarray, list, np.ndarray, np.ndarray]:
        """The entries with key [E] >= 0, sorted by key: (key [e], rles [e], track [e], area [e])."""
        chosen = np.flatnonzero(key >= 0)
        chosen = chosen[np.argsort(key[chosen], kind="stable")]
        return key[chosen], [self.rles[i] for i in chosen], self.track[chosen], self.area[chosen]


def _match(gt: _GroundTruth, gt_ignored: np.ndarray, det: _Predictions, det_present: _Present,
           n_videos: int, one_match_per_gt: bool) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching in every (video, category) with both ground truth and predictions.

    Returns, per prediction, area range and IoU threshold [N, A, T]: whether it is a true match
    (matched, to a ground truth with non-zero id) and whether it matched an ignored ground truth.
    """
    shape = (len(det.category), len(AREA_RANGES), len(IOU_THRESHOLDS))
    true_match, on_ignored = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    det_keys, det_start, det_count = np.unique(det.category * n_videos + det.video, return_index=True,
                                               return_counts=True)
    gt_keys, gt_start, gt_count = np.unique(gt.category * n_videos + gt.video, return_index=True, return_counts=True)
    _, in_det, in_gt = np.intersect1d(det_keys, gt_keys, assume_unique=True, return_indices=True)
    if len(in_det) == 0:
        return true_match, on_ignored
    det_start, det_count = det_start[in_det], det_count[in_det]  # [P] the groups with both
    gt_start, gt_count = gt_start[in_gt], gt_count[in_gt]
    group, det_offset, gt_offset = _group_pairs(det_count, gt_count)
    pair_iou = _video_iou(gt, det, det_present, det_start, det_count, gt_start, gt_count)  # [pairs]

    # Buckets of groups with similar ground-truth counts keep the padding small.
    width = 1 << np.ceil(np.log2(gt_count)).astype(np.int64)
    for bucket_width in np.unique(width):
        groups = np.flatnonzero(width == bucket_width)
        groups = groups[np.argsort(-det_count[groups], kind="stable")]  # active groups are a prefix
        local = np.full(len(det_count), -1)
        local[groups] = np.arange(len(groups))
        in_bucket = local[group] >= 0
        iou = np.full((len(groups), det_count[groups[0]], bucket_width), -1.0)  # [B, D, W]
        iou[local[group[in_bucket]], det_offset[in_bucket], gt_offset[in_bucket]] = pair_iou[in_bucket]
        gt_index = gt_start[groups][:, None] + np.arange(bucket_width)  # [B, W]
        padding = np.arange(bucket_width) >= gt_count[groups][:, None]
        gt_index[padding] = 0  # padded columns have IoU -1 and are never chosen
        matched, ignored = _match_bucket(iou, det_count[groups], gt_ignored[gt_index].transpose(0, 2, 1),
                                         gt.crowd[gt_index], gt.ids[gt_index] != 0, one_match_per_gt)
        rows = det_start[groups][:, None] + np.arange(iou.shape[1])  # [B, D]
        real = np.arange(iou.shape[1]) < det_count[groups][:, None]
        true_match[rows[real]] = matched[real]
        on_ignored[rows[real]] = ignored[real]
    return true_match, on_ignored


def _group_pairs(n_det: np.ndarray, n_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (prediction, ground truth) pair of every group: (group, prediction offset, gt offset) [pairs]."""
    sizes = n_det * n_gt
    group = np.repeat(np.arange(len(sizes)), sizes)
    within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return group, within // n_gt[group], within % n_gt[group]


def _video_iou(gt: _GroundTruth, det: _Predictions, det_present: _Present, det_start: np.ndarray,
               det_count: np.ndarray, gt_start: np.ndarray, gt_count: np.ndarray) -> np.ndarray:
    """Video IoU of every (prediction, ground truth) pair of every group, in `_group_pairs` order [pairs].

    Groups [P] are row ranges of `det` and `gt` (one video and category each). Per group and frame,
    one pycocotools call gives the IoUs of the masks present; the intersection is recovered exactly
    as round(iou * (|d| + |g|) / (1 + iou)) and summed over frames. The union is (sum of |d|) +
    (sum of |g|) - I over all frames, which counts |d| or |g| alone where the other is absent.
    """
    det_group = _row_groups(det_start, det_count, len(det.category))
    gt_group = _row_groups(gt_start, gt_count, len(gt.category))
    gt_rows = np.flatnonzero(gt_group >= 0)
    gt_present = _Present.of([gt.masks[i] for i in gt_rows])
    gt_present.track = gt_rows[gt_present.track]
    n_frames = 1 + max(det_present.frame.max(initial=0), gt_present.frame.max(initial=0))
    det_key, det_rles, det_rows, det_areas = det_present.select(det_group[det_present.track] * n_frames
                                                                + det_present.frame)
    gt_key, gt_rles, gt_rows, gt_areas = gt_present.select(gt_group[gt_present.track] * n_frames + gt_present.frame)
    keys = np.intersect1d(det_key, gt_key)  # (group, frame) with masks on both sides
    det_from, det_to = np.searchsorted(det_key, keys), np.searchsorted(det_key, keys, side="right")
    gt_from, gt_to = np.searchsorted(gt_key, keys), np.searchsorted(gt_key, keys, side="right")

    pairs = det_count * gt_count
    pair_start = np.cumsum(pairs) - pairs
    inter_sum = np.zeros(pairs.sum())
    for group, d0, d1, g0, g1 in tqdm(zip(keys // n_frames, det_from, det_to, gt_from, gt_to), total=len(keys),
                                      desc="video IoU", disable=None, leave=False):
        iou = mask_api.iou(det_rles[d0:d1], gt_rles[g0:g1], [0] * (g1 - g0))  # [d, g]
        if (iou < 0).any():
            raise ValueError("a prediction and a ground-truth mask of one frame differ in size")
        pair = (pair_start[group] + (det_rows[d0:d1, None] - det_start[group]) * gt_count[group]
                + (gt_rows[None, g0:g1] - gt_start[group]))
        inter_sum[pair] += np.rint(iou * (det_areas[d0:d1, None] + gt_areas[None, g0:g1]) / (1 + iou))

    group, det_offset, gt_offset = _group_pairs(det_count, gt_count)
    det_row, gt_row = det_start[group] + det_offset, gt_start[group] + gt_offset
    union = (det_present.area_sum(len(det.category))[det_row] + gt_present.area_sum(len(gt.category))[gt_row]
             - inter_sum)
    return np.where(union > 0, inter_sum / np.where(union > 0, union, 1), 0.0)


def _row_groups(start: np.ndarray, count: np.ndarray, n_rows: int) -> np.ndarray:
    """[n_rows] index of the group (row range) holding each row, -1 for rows in none."""
    group = np.full(n_rows, -1)
    group[np.repeat(start, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)] = \
        np.repeat(np.arange(len(start)), count)
    return group


def _match_bucket(iou: np.ndarray, n_det: np.ndarray, gt_ignored: np.ndarray, gt_crowd: np.ndarray,
                  gt_id_nonzero: np.ndarray, one_match_per_gt: bool) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's greedy matching for B groups at once, all area ranges and thresholds together.

    iou [B, D, W] (predictions by rank, ground truth in file order, -1 padding); n_det [B], descending;
    gt_ignored [B, A, W]; gt_crowd, gt_id_nonzero [B, W]. Returns true_match, on_ignored [B, D, A, T].
    """
    n_groups, n_ranks, width = iou.shape
    n_areas, n_thresholds = gt_ignored.shape[1], len(IOU_THRESHOLDS)
    taken = np.zeros((n_groups, n_areas, n_thresholds, width), dtype=bool)
    true_match = np.zeros((n_groups, n_ranks, n_areas, n_thresholds), dtype=bool)
    on_ignored = np.zeros_like(true_match)
    for r in range(n_ranks):
        k = int(np.count_nonzero(n_det > r))  # groups with an r-th prediction
        ious = iou[:k, r]  # [k, W]
        candidate = ious[:, None, None, :] >= IOU_THRESHOLDS[None, None, :, None]  # [k, 1, T, W]
        if one_match_per_gt:
            candidate = candidate & (~taken[:k] | gt_crowd[:k, None, None, :])  # [k, A, T, W]
        ignored = gt_ignored[:k, :, None, :]  # [k, A, 1, W]
        # Ground truth in the area range comes first; an ignored one is taken only if none qualifies.
        regular, has_regular = _last_best(ious, candidate & ~ignored)
        fallback, has_fallback = _last_best(ious, candidate & ignored)
        pick = np.where(has_regular, regular, fallback)  # [k, A, T]
        found = has_regular | has_fallback
        true_match[:k, r] = found & gt_id_nonzero[np.arange(k)[:, None, None], pick]
        on_ignored[:k, r] = ~has_regular & has_fallback
        if one_match_per_gt:
            b, a, t = np.nonzero(found)
            taken[b, a, t, pick[b, a, t]] = True
    return true_match, on_ignored


def _last_best(ious: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the highest allowed IoU, the last one on ties, as COCOeval's `>=` scan picks ([k, A, T]),
    and whether any is allowed. ious [k, W], allowed [k, A, T, W]."""
    scored = np.where(allowed, ious[:, None, None, :], -1.0)
    return scored.shape[-1] - 1 - np.argmax(scored[..., ::-1], axis=-1), allowed.any(axis=-1)


def _accumulate(tp: np.ndarray, fp: np.ndarray, category: np.ndarray, rank: np.ndarray, order: np.ndarray,
                n_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate for all categories at once.

    tp, fp [N, A, T] (ignored predictions are neither); category, rank [N]; order [N]: the predictions by
    (category, -score, video, rank), as COCOeval concatenates videos and mergesorts on -score;
    n_positive [A, K]: non-ignored ground truth. Returns precision [T, R, K, A, M], recall [T, K, A, M].
    """
    n_areas, n_categories = n_positive.shape
    shape = (len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), n_categories, n_areas, len(MAX_DETS))
    precision, recall = np.full(shape, -1.0), np.full(shape[:1] + shape[2:], -1.0)
    for m, max_det in enumerate(MAX_DETS):
        rows = order[rank[order] < max_det]
        segment = category[rows]  # [n], ascending
        for a in range(n_areas):
            block_precision, block_recall = precision[..., a, m], recall[..., a, m]  # views [T, R, K], [T, K]
            valid = np.flatnonzero(n_positive[a] > 0)
            block_precision[:, :, valid] = 0.0
            block_recall[:, valid] = 0.0
            if len(valid) == 0 or len(rows) == 0:
                continue
            tp_sum = _segment_cumsum(tp[rows, a].T, segment).astype(np.float64)  # [T, n]
            fp_sum = _segment_cumsum(fp[rows, a].T, segment).astype(np.float64)
            rc = tp_sum / np.maximum(n_positive[a][segment], 1)
            pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
            envelope = _segment_suffix_max(pr, segment)  # precision made monotone
            for t in range(len(IOU_THRESHOLDS)):
                block_precision[t][:, valid] = _sample(envelope[t], rc[t], segment, valid)
            last = np.append(np.flatnonzero(segment[1:] != segment[:-1]), len(segment) - 1)  # of each category
            with_gt = n_positive[a][segment[last]] > 0
            block_recall[:, segment[last[with_gt]]] = rc[:, last[with_gt]]
    return precision, recall


def _segment_cumsum(x: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Cumulative sum along axis 1 of x [T, n], restarting where the ascending `segment` [n] changes."""
    total = np.cumsum(x, axis=1, dtype=np.int64)
    starts = np.unique(_run_starts(segment))
    before = total[:, starts] - x[:, starts]  # [T, segments] sum before each segment
    return total - np.repeat(before, np.diff(np.append(starts, len(segment))), axis=1)


def _lexical(real: np.ndarray, imag: np.ndarray) -> np.ndarray:
    """Pairs as complex numbers, which NumPy compares (max, sort, searchsorted) real part first."""
    pairs = np.empty(np.broadcast_shapes(np.shape(real), np.shape(imag)), dtype=np.complex128)
    pairs.real, pairs.imag = real, imag
    return pairs


def _segment_suffix_max(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """max(values[t, j:end of j's segment]) for every j; values [T, n], segment [n] ascending.

    A running maximum of the pairs (-segment, value), taken backwards, restarts at each segment.
    """
    pairs = _lexical(-segment[::-1], values[:, ::-1])
    return np.maximum.accumulate(pairs, axis=1)[:, ::-1].imag


def _sample(envelope: np.ndarray, rc: np.ndarray, segment: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """[R, len(categories)]: per category, the envelope at its first prediction with recall >= each
    threshold (COCOeval's searchsorted side='left'), 0 where recall never gets there."""
    keys = _lexical(segment, rc)  # ascending: recall never falls within a category
    queries = _lexical(categories[:, None], RECALL_THRESHOLDS[None, :])  # [C, R]
    index = np.searchsorted(keys, queries.ravel(), side="left").reshape(queries.shape)
    clipped = np.minimum(index, len(segment) - 1)
    inside = (index < len(segment)) & (segment[clipped] == categories[:, None])
    return np.where(inside, envelope[clipped], 0.0).T


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else None


def _group(category: dict, name: str) -> bool:
    """Whether a category belongs to group APb / APn (partition, else frequency) or APc / APu (split)."""
    if name in ("APb", "APn"):
        if "partition" in category:
            return (category["partition"] in (0, 1)) == (name == "APb")
        if "frequency" in category:
            return (category["frequency"] in ("c", "f")) == (name == "APb")
        return False
    return category.get("split") == ("common" if name == "APc" else "uncommon")


def _summaries(precision: np.ndarray, recall: np.ndarray, groups: dict[str, list[int]]) -> dict:
    """The official summarize: means over entries > -1, at maxDets 100 unless named."""
    t50, t75 = np.where(IOU_THRESHOLDS == 0.5)[0], np.where(IOU_THRESHOLDS == 0.75)[0]
    all_, small, medium, large = range(len(AREA_NAMES))
    metrics = {
        "AP": _mean_valid(precision[:, :, :, all_, 2]),
        "AP50": _mean_valid(precision[t50][:, :, :, all_, 2]),
        "AP75": _mean_valid(precision[t75][:, :, :, all_, 2]),
        "APs": _mean_valid(precision[:, :, :, small, 2]),
        "APm": _mean_valid(precision[:, :, :, medium, 2]),
        "APl": _mean_valid(precision[:, :, :, large, 2]),
        "AR1": _mean_valid(recall[:, :, all_, 0]),
        "AR10": _mean_valid(recall[:, :, all_, 1]),
        "AR100": _mean_valid(recall[:, :, all_, 2]),
        "ARs": _mean_valid(recall[:, :, small, 2]),
        "ARm": _mean_valid(recall[:, :, medium, 2]),
        "ARl": _mean_valid(recall[:, :, large, 2]),
    }
    for name, members in groups.items():
        metrics[name] = _mean_valid(precision[:, :, members, all_, 2])
    return metrics


def _per_category_rows(categories: list[dict], precision: np.ndarray, n_gt: np.ndarray,
                       n_predictions: np.ndarray) -> list[dict]:
    """One row per category (ascending id): its fields, group, AP and AP50 (None without ground truth)."""
    t50 = np.where(IOU_THRESHOLDS == 0.5)[0]
    rows = []
    for k, category in enumerate(categories):
        scores = precision[:, :, k, 0, 2]  # [T, R]
        has_gt = bool((scores > -1).any())
        group = "base" if _group(category, "APb") else "novel" if _group(category, "APn") else None
        rows.append({
            "id": category["id"], "name": category["name"], "partition": category.get("partition"),
            "frequency": category.get("frequency"), "split": category.get("split"), "group": group,
            "AP": float(scores.mean()) if has_gt else None,
            "AP50": float(scores[t50].mean()) if has_gt else None,
            "num_gt": int(n_gt[k]), "num_predictions": int(n_predictions[k]),
        })
    return rows
