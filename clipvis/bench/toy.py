"""`clipvis bench toy`: what bounds the toy experiment, measured and printed as JSON.

- `clip_grid`: the share of ground-truth objects (every `frame_step`-th frame of each video benchmark)
  whose mask survives at the CLIP feature stride, and the share of ground-truth tracks whose mask survives
  in at least one of those frames (a track's class comes from its frames, so it needs one). The mask is
  resized with its frame as inference resizes it, padded, averaged over the 4 x 4 cells of the mask
  resolution (logit 2 * cover - 1), then resized to the dense CLIP map and binarised as the classifier
  does (`FrozenCLIP.pool_masks`).
  A mask that comes out empty gets no CLIP class at all.
- `gt_mask_classification`: top-1 over the whole vocabulary of mask pooling with those ground-truth
  masks (overall, base, novel); an object whose mask vanished counts as wrong. It is the ceiling of
  open-vocabulary classification for a segmenter with perfect masks. `by_area`: the same top-1 by the
  object's visible area as a share of the frame's (groups bounded by AREA_BOUNDS); `errors`: of the
  visible objects classified wrong, the shares given the right colour but another shape, the right
  shape but another colour, or neither (the toy categories are colour x shape).
- `segmenter` (with a model's runs folder): per benchmark, the AP of the `default` variant's results
  and its oracle-class AP (every predicted track labelled with the class of the ground truth it
  overlaps most, identical tracks counted once: the class-agnostic quality of the masks and tracks),
  and each variant's slot-switch rate (`matching.json` of `clipvis infer`); and `tracks`, how the segmenter's
  own tracks are classified: the share of ground-truth tracks found (some predicted track overlaps them
  with video IoU >= 0.5) and, of those found, the share whose best-scored overlapping prediction has
  their category (overall, base, novel). Set beside the ground-truth-mask top-1, it tells whether AP
  is lost to masks and tracks or to the classification of the segmenter's own masks. `frames`: the share
  of ground-truth objects, frame by frame, that some result's mask in that frame overlaps with IoU >= 0.5,
  overall and by the object's area as a share of the frame's (whether masks or tracking lose them).
- `training`: the mean total loss over the last tenth of the logged iterations and the tenth before
  (from MLflow); the loss still falls when the last is more than 1 % below the one before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pycocotools.mask as mask_api
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clipvis import layout
from clipvis.config import Config, InferConfig
from clipvis.errors import InputError
from clipvis.files import read_json, read_yaml
from clipvis.model.clip_encoder import cover_logits

log = logging.getLogger(__name__)

VIDEO_BENCHMARKS = ("toy_lvvis", "toy_ovis")
FOUND_IOU = 0.5  # a ground-truth track (object) is found by a predicted track (mask) overlapping it this much
AREA_BOUNDS = (0.01, 0.025, 0.06)  # object area / frame area: the bounds of the size groups of `frames`
STILL_FALLING = 0.01  # relative drop of the loss between the last two tenths that counts as falling
DEFAULT_VARIANT = "default"


def run(args, cfg: Config) -> dict:
    from clipvis.data.registry import resolve_root

    if args.frame_step < 1:
        raise InputError("--frame-step", str(args.frame_step), "must be at least 1")
    root = resolve_root(args.root, cfg.data.root)
    report = {"clip": cfg.clip.model, "clip_dense_stride": cfg.clip.dense_stride,
              "infer_size": [cfg.infer.min_size, cfg.infer.max_size],
              "frame_step": args.frame_step}
    report |= ground_truth_masks(cfg, root, args.frame_step)
    if args.model_runs:
        runs = Path(args.model_runs)
        report["segmenter"] = {name: segmenter_quality(runs / layout.INFER / name, name, root) for name in VIDEO_BENCHMARKS}
        report["training"] = training_trend(runs / layout.TRAIN, cfg.scale)
    return report


# ------------------------------------------------------------------------------------ ground-truth masks


def ground_truth_masks(cfg: Config, root: Path, frame_step: int) -> dict:
    """{"clip_grid": {benchmark: ...}, "gt_mask_classification": {benchmark: ...}} (see the module docstring)."""
    from clipvis.data.vocabularies import categories, novel_ids
    from clipvis.model.clipvis_model import CLIPVIS
    from clipvis.model.text_classifier import text_embeddings

    model = CLIPVIS.from_config(cfg.model, cfg.clip).eval()  # only its CLIP and preprocessing are used
    grid, classification = {}, {}
    for name in VIDEO_BENCHMARKS:
        vocabulary = categories(name, root)
        text = text_embeddings(model.clip, [c["name"] for c in vocabulary], cfg.clip.text_cache)
        index = {c["id"]: i for i, c in enumerate(vocabulary)}
        counts = classify_ground_truth(model, text, index, name, root, cfg.infer, frame_step)
        novel = np.array([c["id"] in novel_ids(name, root) for c in vocabulary])[[index[i] for i in counts["category"]]]
        visible, correct = counts["visible"], counts["correct"]
        track_ids = np.unique(counts["track"])
        seen = np.array([visible[counts["track"] == track].any() for track in track_ids], dtype=bool)
        grid[name] = {"objects": len(visible), "visible": int(visible.sum()), "share": _share(visible),
                      "tracks": len(seen), "tracks_visible": int(seen.sum()), "tracks_share": _share(seen)}
        classification[name] = {group: _share(correct[chosen]) for group, chosen in
                                (("overall", np.ones_like(novel)), ("base", ~novel), ("novel", novel))}
        classification[name]["of_visible"] = _share(correct[visible])
        classification[name]["by_area"] = by_area(correct, counts["area_share"])
        classification[name]["errors"] = error_kinds(vocabulary, counts["category"][visible & ~correct],
                                                     counts["predicted"][visible & ~correct])
    return {"clip_grid": grid, "gt_mask_classification": classification}


@dataclass
class SampledFrame:
    """One sampled frame of a benchmark video and its ground-truth objects."""

    present: list[dict]  # the annotations (tracks) with a mask in this frame
    masks: torch.Tensor  # (N, H, W) bool, their masks at the original size
    resized: torch.Tensor  # (3, h, w) the frame as inference resizes it
    images: torch.Tensor  # (1, 3, hp, wp) the model's input (normalised, padded)

    def mask_logits(self) -> torch.Tensor:
        """(N, hp/4, wp/4) the ground-truth masks at the mask resolution (`ground_truth_logits`)."""
        return ground_truth_logits(self.masks, tuple(self.resized.shape[-2:]), tuple(self.images.shape[-2:]))


def sampled_frames(model, benchmark_name: str, root: Path, infer: InferConfig, frame_step: int,
                   desc: str) -> Iterator[SampledFrame]:
    """Every `frame_step`-th frame of each video of a benchmark that shows a ground-truth object, resized as
    inference resizes it and preprocessed by `model`."""
    from clipvis.data.registry import get_benchmark
    from clipvis.data.datasets import decode_masks, read_rgb
    from clipvis.data.formats import load_video_gt
    from clipvis.model.postprocess import resize_for_inference

    benchmark = get_benchmark(benchmark_name)
    annotation_path, image_root = benchmark.annotation_path(root), benchmark.image_path(root)
    gt = load_video_gt(annotation_path)
    tracks: dict[int, list[dict]] = {}
    for annotation in gt["annotations"]:
        tracks.setdefault(annotation["video_id"], []).append(annotation)
    for video in tqdm(gt["videos"], desc=f"{desc} {benchmark_name}", unit="video"):
        height, width = video["height"], video["width"]
        for t in range(0, video["length"], frame_step):
            present = [a for a in tracks.get(video["id"], []) if a["segmentations"][t]]
            if not present:
                continue
            frame = read_rgb(image_root / video["file_names"][t], height, width, annotation_path)
            resized = resize_for_inference(frame, infer.min_size, infer.max_size, infer.resize)
            masks = decode_masks([a["segmentations"][t]["counts"] for a in present], height, width)
            yield SampledFrame(present, masks, resized, model.preprocess([resized]))


@torch.inference_mode()
def classify_ground_truth(model, text, index: dict[int, int], benchmark_name: str, root: Path, infer: InferConfig,
                          frame_step: int) -> dict[str, np.ndarray]:
    """Per ground-truth object in every `frame_step`-th frame: its track (annotation id), its category id,
    whether its mask survives at the CLIP stride, whether pooling CLIP over it gives its category
    (`index`: category id -> the vocabulary index of `text`), the category id it gives (meaningless where
    the mask vanished), and its visible area over the frame's."""
    from clipvis.model.text_classifier import classification_logits

    vocabulary_ids = {i: category_id for category_id, i in index.items()}
    track, category, visible, correct, predicted, area_share = [], [], [], [], [], []
    for frame in sampled_frames(model, benchmark_name, root, infer, frame_step, "ground-truth masks"):
        dense = model.clip.features(frame.images)["clip_dense"]
        embeddings, valid = model.clip.pool_masks(dense, frame.mask_logits()[None])
        scores = classification_logits(embeddings, text.embeddings, text.synonym_class, text.num_classes,
                                       model.clip.logit_scale, valid)[0]  # (N, C)
        labels = torch.tensor([index[a["category_id"]] for a in frame.present])
        track += [a["id"] for a in frame.present]
        category += [a["category_id"] for a in frame.present]
        visible += valid[0].tolist()
        correct += (valid[0] & (scores.argmax(-1) == labels)).tolist()
        predicted += [vocabulary_ids[i] for i in scores.argmax(-1).tolist()]
        area_share += (frame.masks.flatten(1).sum(1) / frame.masks[0].numel()).tolist()
    return {"track": np.array(track, dtype=np.int64), "category": np.array(category, dtype=np.int64),
            "visible": np.array(visible, dtype=bool), "correct": np.array(correct, dtype=bool),
            "predicted": np.array(predicted, dtype=np.int64), "area_share": np.array(area_share)}


def ground_truth_logits(masks: torch.Tensor, image_size: tuple[int, int], padded_size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) bool at the original size -> (N, Hp/4, Wp/4) logits in [-1, 1]: the masks resized as their
    frame is (bilinear, antialiased), padded, and averaged over each 4 x 4 cell; positive where more than
    half of a cell is covered."""
    x = masks[None].float()
    if tuple(masks.shape[-2:]) != image_size:
        x = F.interpolate(x, size=image_size, mode="bilinear", antialias=True, align_corners=False)
    return cover_logits(F.pad(x, (0, padded_size[1] - image_size[1], 0, padded_size[0] - image_size[0]))[0])


def mask_ious(masks: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(Q, h, w) and (N, h, w) bool -> (Q, N): the IoU of each mask with each ground-truth mask (0 where both
    are empty)."""
    masks, truth = masks.flatten(1).float(), truth.flatten(1).float()
    intersection = masks @ truth.T
    return intersection / (masks.sum(1, keepdim=True) + truth.sum(1)[None] - intersection).clamp(min=1)


# ------------------------------------------------------------------------------------ the trained segmenter


def segmenter_quality(infer_dir: Path, benchmark_name: str, root: Path) -> dict:
    """AP and oracle-class AP of the default variant's results, and every variant's slot-switch rate."""
    from clipvis.data.registry import get_benchmark
    from clipvis.data.formats import load_video_gt, load_video_results
    from clipvis.data.vocabularies import novel_ids
    from clipvis.evaluation.video_ap import evaluate_videos

    manifest = infer_dir / layout.VARIANTS_FILE
    if not manifest.is_file():
        raise InputError(manifest, "", f"not found; run `clipvis infer --variants ...` on {benchmark_name} first")
    benchmark = get_benchmark(benchmark_name)
    gt = load_video_gt(benchmark.annotation_path(root))
    results = load_video_results(infer_dir / DEFAULT_VARIANT / layout.RESULTS_FILE, gt)
    metrics = evaluate_videos(gt, results, flavour=benchmark.scorer).metrics
    overlaps = TrackOverlaps(gt, results)
    oracle = evaluate_videos(gt, oracle_class_results(overlaps), flavour=benchmark.scorer).metrics
    switches = {name: read_json(infer_dir / name / layout.MATCHING_FILE)["switch_rate"]
                for name in read_json(manifest)["variants"]}
    return {"AP": metrics["AP"], "APb": metrics["APb"], "APn": metrics["APn"], "oracle_class_AP": oracle["AP"],
            "slot_switch_rate": switches, "tracks": track_classification(overlaps, novel_ids(benchmark, root)),
            "frames": frame_recall(overlaps)}


class TrackOverlaps:
    """The results best score first, tracks with identical masks (one track slot selected with several labels)
    kept once, at the best score; and per kept result its video IoU with each ground-truth track of its video."""

    def __init__(self, gt: dict, results: list[dict]):
        self.truths: dict[int, list[dict]] = {}  # video id -> its ground-truth tracks
        for annotation in gt["annotations"]:
            self.truths.setdefault(annotation["video_id"], []).append(annotation)
        seen = set()
        self.results: list[dict] = []
        self.ious: list[np.ndarray] = []  # per result (tracks of its video,)
        for result in sorted(results, key=lambda r: -r["score"]):
            key = (result["video_id"], tuple(m["counts"] if m else None for m in result["segmentations"]))
            if key in seen:
                continue
            seen.add(key)
            self.results.append(result)
            self.ious.append(np.array([video_iou(result["segmentations"], truth["segmentations"])
                                       for truth in self.truths.get(result["video_id"], [])]))


def oracle_class_results(overlaps: TrackOverlaps) -> list[dict]:
    """The kept results with each track labelled with the category of the ground-truth track of its video that it
    overlaps most (video IoU, as the scorers compute it; tracks overlapping none keep their label)."""
    relabelled = []
    for result, ious in zip(overlaps.results, overlaps.ious):
        truths = overlaps.truths.get(result["video_id"], [])
        best = int(np.argmax(ious)) if len(ious) and ious.max() > 0 else None
        relabelled.append({**result, "category_id": truths[best]["category_id"] if best is not None
                           else result["category_id"]})
    return relabelled


def track_classification(overlaps: TrackOverlaps, novel: set[int]) -> dict:
    """Per ground-truth track: found (a kept result overlaps it with video IoU >= FOUND_IOU) and, when found,
    whether the best-scored such result has its category. The share found, and the share right of those
    found: overall, base and novel (categories in `novel`)."""
    best_label: dict[tuple[int, int], int] = {}  # (video id, track index) -> category of its best-scored finder
    for result, ious in zip(overlaps.results, overlaps.ious):
        for track in np.flatnonzero(ious >= FOUND_IOU).tolist():
            best_label.setdefault((result["video_id"], track), result["category_id"])
    found, right, is_novel = [], [], []
    for video_id, truths in overlaps.truths.items():
        for track, truth in enumerate(truths):
            label = best_label.get((video_id, track))
            found.append(label is not None)
            right.append(label == truth["category_id"])
            is_novel.append(truth["category_id"] in novel)
    found, right, is_novel = (np.array(flags, dtype=bool) for flags in (found, right, is_novel))
    return {"tracks": len(found), "found": _share(found),
            "top1_of_found": {group: _share(right[found & chosen]) for group, chosen in
                              (("overall", np.ones_like(found)), ("base", ~is_novel), ("novel", is_novel))}}


def frame_recall(overlaps: TrackOverlaps) -> dict:
    """Per ground-truth object per frame: found when a kept result's mask in that frame overlaps it with IoU >=
    FOUND_IOU. The number of objects and the share found, overall and per size group (object area over frame
    area, groups bounded by AREA_BOUNDS)."""
    found, area_share = [], []
    for video_id, truths in overlaps.truths.items():
        predictions = [r["segmentations"] for r in overlaps.results if r["video_id"] == video_id]
        for frame in range(len(truths[0]["segmentations"])):
            objects = [t["segmentations"][frame] for t in truths if t["segmentations"][frame]]
            masks = [p[frame] for p in predictions if p[frame]]
            if not objects:
                continue
            ious = mask_api.iou(masks, objects, [0] * len(objects)) if masks else np.zeros((0, len(objects)))
            found += (np.asarray(ious).reshape(len(masks), len(objects)) >= FOUND_IOU).any(0).tolist()
            area_share += [float(mask_api.area(o)) / (o["size"][0] * o["size"][1]) for o in objects]
    found = np.array(found, dtype=bool)
    return {"objects": len(found), "found": _share(found), "found_by_area": by_area(found, area_share)}


def by_area(flags: np.ndarray, area_share) -> dict[str, float | None]:
    """The share of true `flags` per size group ("low-high": object area over frame area, bounded by AREA_BOUNDS)."""
    group = np.digitize(area_share, AREA_BOUNDS)
    bounds = ["0", *(f"{b:g}" for b in AREA_BOUNDS), "1"]
    return {f"{low}-{high}": _share(flags[group == i]) for i, (low, high) in enumerate(zip(bounds, bounds[1:]))}


def error_kinds(vocabulary: list[dict], truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Of wrong classifications (category ids `truth` and `predicted`, toy categories with a colour and a
    shape): how many, and the shares with the right colour only ("shape"), the right shape only ("colour")
    and neither ("both")."""
    described = {c["id"]: (c["colour"], c["shape"]) for c in vocabulary}
    same = np.array([[a == b for a, b in zip(described[t], described[p])] for t, p in zip(truth, predicted)],
                    dtype=bool).reshape(-1, 2)  # (wrong, 2): same colour, same shape
    return {"wrong": len(same), "shape": _share(same[:, 0] & ~same[:, 1]), "colour": _share(~same[:, 0] & same[:, 1]),
            "both": _share(~same[:, 0] & ~same[:, 1])}


def video_iou(prediction: list, truth: list) -> float:
    """Video IoU of two tracks (per frame an RLE or None): intersections summed over the frames where both are
    present, over the union summed over every frame where either is."""
    intersection = union = 0.0
    for mine, theirs in zip(prediction, truth):
        if mine and theirs:
            inter = float(mask_api.area(mask_api.merge([mine, theirs], intersect=True)))
            intersection += inter
            union += float(mask_api.area(mine)) + float(mask_api.area(theirs)) - inter
        elif mine or theirs:
            union += float(mask_api.area(mine or theirs))
    return intersection / union if union else 0.0


# ------------------------------------------------------------------------------------ training


def training_trend(train_dir: Path, scale: str) -> dict:
    """The final total loss (mean over the last tenth of the logged iterations), the tenth before, and whether
    the loss still falls."""
    from mlflow.tracking import MlflowClient

    from clipvis.tracking import tracking_uri, training_history

    config_path = train_dir / layout.CONFIG_FILE
    if not config_path.is_file():
        raise InputError(config_path, "", "not found; train the model first (`clipvis train`)")
    history = training_history(MlflowClient(tracking_uri()), read_yaml(config_path), scale).get("total", {})
    if len(history) < 2:
        raise InputError(config_path, "", "no training losses in the MLflow store for this config")
    steps = sorted(history)
    tenth = max(1, len(steps) // 10)
    last = float(np.mean([history[s] for s in steps[-tenth:]]))
    before = float(np.mean([history[s] for s in steps[-2 * tenth:-tenth]]))
    return {"iterations": steps[-1], "final_loss": round(last, 4), "previous_loss": round(before, 4),
            "relative_change": round(last / before - 1, 4), "still_falling": last < before * (1 - STILL_FALLING)}


def _share(flags: np.ndarray) -> float | None:
    return round(float(flags.mean()), 4) if len(flags) else None
