"""Image-level evaluation: segment an image as the CLIP-VIS image model does, then mask AP with COCOeval.

Segmenting (docs/method.md §8): the image is resized as at test time (ResizeShortestEdge), run
through the network, and each query's mask is classified by CLIP. The score of (query q, class c) is
s = (p_c · u · o)^½ (`image_scores`, with the `scoring` switches of Tables II/III). The top k pairs
over all Q·C are kept, so a query may come back with several labels; the final score is s · m, where
m, the mask score, is the mean sigmoid over the mask's positive pixels. Masks go back to the original
size as in docs/method.md §7.10 and are written as compressed RLE.

Choices:
- k is `scoring.detections_per_image`: the reference's TEST.DETECTIONS_PER_IMAGE (detectron2 default
  100), which its LVIS evaluation during training uses. LVIS's own evaluator would accept up to 300
  per image; COCOeval keeps at most 100 per (image, category), so with k <= 100 nothing is cut.
- m is taken on the stride-4 logits over the padded image, as the video path does (docs/method.md §7.9); the
  reference takes it after upsampling to the original size. They differ by interpolation only.

AP is pycocotools' COCOeval (iouType "segm") at area "all" and maxDets 100: AP (IoU .50:.05:.95),
AP50, AP75, and group means such as APb/APn: the mean AP of the group's categories that have ground
truth (COCOeval leaves a category without ground truth at -1, out of every mean); None when no
category of the group has any. COCOeval counts every unmatched prediction as a false positive, which
is right for exhaustively annotated images (the toy sets); LVIS's federated protocol is not applied.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from clipvis.config import InferConfig, ScoringConfig
from clipvis.model.clipvis_model import CLIPVIS
from clipvis.model.weighted_scores import image_scores
from clipvis.model.text_classifier import TextEmbeddings
from clipvis.model.postprocess import (MASK_SCORE_EPS, UPSAMPLE_QUERIES, encode_masks, mask_score_terms,
                                      masks_to_original, resize_for_inference)

AREA_ALL, MAX_DETS_100 = 0, -1  # indices into COCOeval's area ranges and maxDets


@torch.inference_mode()
def segment_image(model: CLIPVIS, image: torch.Tensor, text: TextEmbeddings, scoring: ScoringConfig,
                  infer: InferConfig, image_id: int, category_ids: list[int] | None = None) -> list[dict]:
    """One (3, H, W) uint8 RGB image -> COCO instance results, best score first.

    Records are ``{image_id, category_id, score, segmentation: {size: [H, W], counts}}``; `category_ids`
    maps a vocabulary index to the category id written (default: index + 1).
    """
    resized = resize_for_inference(image, infer.min_size, infer.max_size, infer.resize)
    batch = model.preprocess([resized])  # (1, 3, Hp, Wp)
    outputs = model(batch, with_aux=False)
    mask_logits = outputs["pred_masks"][0]  # (Q, Hp/4, Wp/4)
    class_logits = model.class_logits(outputs["clip_dense"], outputs["pred_masks"], text)[0]  # (Q, C)
    scores = image_scores(class_logits.float(), outputs["pred_ious"][0, :, 0].float(),
                          outputs["pred_object_logits"][0].float(), scoring)  # (Q, C)

    classes = scores.shape[1]
    top, index = scores.flatten().topk(min(scoring.detections_per_image, scores.numel()))
    queries, labels = index // classes, index % classes
    sums, counts = mask_score_terms(mask_logits)  # (Q,) each
    final = (top * (sums / (counts + MASK_SCORE_EPS)).float()[queries]).cpu()

    kept = queries.unique()  # each selected query's mask is upsampled and encoded once
    rle_of: dict[int, str] = {}
    for start in range(0, len(kept), UPSAMPLE_QUERIES):
        rows = kept[start:start + UPSAMPLE_QUERIES]
        masks = masks_to_original(mask_logits[rows], tuple(batch.shape[-2:]), tuple(resized.shape[-2:]),
                                  tuple(image.shape[-2:]))
        rle_of.update(zip(rows.tolist(), encode_masks(masks)))
    size = list(image.shape[-2:])
    queries, labels = queries.tolist(), labels.tolist()
    return [{"image_id": image_id, "score": float(final[i]),
             "category_id": category_ids[labels[i]] if category_ids else labels[i] + 1,
             "segmentation": {"size": size, "counts": rle_of[queries[i]]}}
            for i in final.argsort(descending=True, stable=True).tolist()]


@dataclass
class ImageAPResult:
    metrics: dict[str, float | None]  # AP, AP50, AP75 and one entry per group, as fractions
    per_category: list[dict]  # id, name, num_gt, num_predictions, AP, AP50 (None without ground truth)


def image_ap(gt: dict, results: list[dict], groups: dict[str, set[int]]) -> ImageAPResult:
    """Mask AP of `results` against `gt` (LVIS/COCO instances as `load_image_gt` returns them).

    results: ``[{image_id, category_id, score, segmentation (RLE)}]``; groups: metric name -> category
    ids, e.g. {"APb": base ids, "APn": novel ids}.
    """
    image_ids = {image["id"] for image in gt["images"]}
    for i, result in enumerate(results):
        if result["image_id"] not in image_ids:
            raise ValueError(f"results[{i}].image_id: image {result['image_id']} is not in the ground truth")
    truth = _coco({**gt, "annotations": [{"iscrowd": 0, **a} for a in gt["annotations"]]})
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print their progress
        found = (truth.loadRes([dict(r) for r in results]) if results  # loadRes adds keys to each record
                 else _coco({"images": gt["images"], "categories": gt["categories"], "annotations": []}))
        evaluator = COCOeval(truth, found, "segm")
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, AREA_ALL, MAX_DETS_100]  # (T, R, K), -1 without ground truth
    thresholds = evaluator.params.iouThrs
    at = {50: np.isclose(thresholds, 0.5), 75: np.isclose(thresholds, 0.75)}
    category_ids = [int(cid) for cid in evaluator.params.catIds]  # K order

    metrics = {"AP": _mean(precision), "AP50": _mean(precision[at[50]]), "AP75": _mean(precision[at[75]])}
    for name, ids in groups.items():
        metrics[name] = _mean(precision[:, :, [k for k, cid in enumerate(category_ids) if cid in ids]])

    num_gt = Counter(a["category_id"] for a in gt["annotations"])
    num_predictions = Counter(r["category_id"] for r in results)
    names = {c["id"]: c.get("name", "") for c in gt["categories"]}
    per_category = [{"id": cid, "name": names[cid], "num_gt": num_gt[cid],
                     "num_predictions": num_predictions[cid], "AP": _mean(precision[:, :, k]),
                     "AP50": _mean(precision[at[50], :, k])} for k, cid in enumerate(category_ids)]
    return ImageAPResult(metrics, per_category)


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _mean(precision: np.ndarray) -> float | None:
    """Mean of the entries > -1 (those of categories with ground truth), None if there are none."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None
