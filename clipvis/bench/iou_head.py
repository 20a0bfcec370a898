"""`clipvis bench iou-head`: how well a trained model's mask-IoU head predicts the IoU of its own masks.

Table IV compares mask-IoU heads by the AP of the method's score, where the IoU score multiplies the object
score; when the object score already ranks the detections, heads of different quality give the same AP.
This measures the heads themselves. Over every `frame_step`-th frame of each toy video benchmark that shows a
ground-truth object, every query of the network (one frame at a time, as inference runs it) gives a
predicted IoU (the head's output) and a true IoU: its mask (logit > 0, at the mask resolution) against the
ground-truth mask it overlaps most (the ground-truth masks binarised at that resolution as `clipvis bench
toy` does; 0 where it overlaps none). Reported per benchmark, for all queries and for the confident ones
(object probability >= OBJECT_SHOWN, as slot switches count them; those the method's score ranks high):
- `spearman`: the rank correlation of predicted and true IoU (does the head rank masks by quality; None
  when the head predicts one value for every query, as a dead ReLU head does);
- `mean_abs_error`: the mean absolute difference (is it calibrated);
- `mean_predicted`, `mean_true`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clipvis.bench.toy import VIDEO_BENCHMARKS, mask_ious, sampled_frames
from clipvis.config import Config
from clipvis.video.inference import OBJECT_SHOWN


def run(args, cfg: Config) -> dict:
    from clipvis.data.registry import resolve_root
    from clipvis.errors import InputError
    from clipvis.model.checkpoint import load_model

    if args.frame_step < 1:
        raise InputError("--frame-step", str(args.frame_step), "must be at least 1")
    root = resolve_root(args.root, cfg.data.root)
    model = load_model(cfg, args.checkpoint)
    return {"checkpoint": str(args.checkpoint), "iou_head_input": cfg.model.iou_head_input,
            "iou_activation": cfg.model.iou_activation, "infer_size": [cfg.infer.min_size, cfg.infer.max_size],
            "frame_step": args.frame_step, "confident": OBJECT_SHOWN,
            "benchmarks": {name: head_quality(*predicted_and_true(model, name, root, cfg, args.frame_step))
                           for name in VIDEO_BENCHMARKS}}


@torch.inference_mode()
def predicted_and_true(model, benchmark_name: str, root: Path, cfg: Config,
                       frame_step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query of every sampled frame: (predicted IoU, true IoU, object probability), each (frames x Q,)."""
    predicted, true, objectness = [], [], []
    for frame in sampled_frames(model, benchmark_name, root, cfg.infer, frame_step, "mask-IoU head"):
        out = model(frame.images)
        true.append(best_ious(out["pred_masks"][0] > 0, frame.mask_logits() > 0))
        predicted.append(out["pred_ious"][0, :, 0])
        objectness.append(out["pred_object_logits"][0].softmax(-1)[:, 0])
    return tuple(torch.cat(values).double().numpy() for values in (predicted, true, objectness))


def best_ious(masks: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(Q, h, w) and (N, h, w) bool -> (Q,): each mask's IoU with the ground-truth mask it overlaps most."""
    return mask_ious(masks, truth).max(1).values


def head_quality(predicted: np.ndarray, true: np.ndarray, objectness: np.ndarray) -> dict:
    """The numbers of the module docstring, for all queries and for the confident ones."""
    confident = objectness >= OBJECT_SHOWN
    return {**agreement(predicted, true), "confident": agreement(predicted[confident], true[confident])}


def agreement(predicted: np.ndarray, true: np.ndarray) -> dict:
    """How predicted IoUs follow true ones: count, Spearman correlation, mean absolute error, means."""
    from scipy.stats import spearmanr

    if not len(predicted):
        return {"queries": 0, "spearman": None, "mean_abs_error": None, "mean_predicted": None, "mean_true": None}
    varies = np.ptp(predicted) > 0 and np.ptp(true) > 0
    return {"queries": len(predicted),
            "spearman": round(float(spearmanr(predicted, true).statistic), 4) if varies else None,
            "mean_abs_error": round(float(np.abs(predicted - true).mean()), 4),
            "mean_predicted": round(float(predicted.mean()), 4), "mean_true": round(float(true.mean()), 4)}
