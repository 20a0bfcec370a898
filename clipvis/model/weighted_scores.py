"""Weighted open-vocabulary classification: class scores refined by object and mask-IoU scores.

Image (docs/method.md §8):  s[q, c] = (p[q, c] · u[q] · o[q]) ^ ½
Video (§7.6):                  s[q, c] = ( o[q] · mean_t (p[t, q, c] · u[t, q]) ^ ½ ) ^ ½

p: softmax over classes of the CLIP logits, u: predicted mask IoU, o: probability of "object"
(for video, the softmax of the frame-mean object logits). The switches of `ScoringConfig` drop a
factor (Table III: object score, IoU score) or the whole weighting (Table II: WOC), leaving p.
"""

from __future__ import annotations

import torch

from clipvis.config import ScoringConfig


def image_scores(class_logits: torch.Tensor, ious: torch.Tensor, object_logits: torch.Tensor,
                 scoring: ScoringConfig) -> torch.Tensor:
    """class_logits (Q, C), ious (Q,), object_logits (Q, 2) -> scores (Q, C)."""
    probs = class_logits.softmax(-1)
    factors = _weights(ious, object_logits.softmax(-1)[..., 0], scoring)
    return probs if factors is None else (probs * factors.unsqueeze(-1)).sqrt()


def video_scores(class_logits: torch.Tensor, ious: torch.Tensor, object_logits: torch.Tensor,
                 scoring: ScoringConfig) -> torch.Tensor:
    """Per-frame class_logits (F, Q, C), ious (F, Q), object_logits (F, Q, 2) -> video scores (Q, C).

    Streaming inference gets the same result by adding frames to a VideoScoreSums as they come.
    """
    sums = VideoScoreSums.empty(*class_logits.shape[1:], scoring, class_logits.device)
    sums.add(class_logits, ious, object_logits)
    return sums.scores()


class VideoScoreSums:
    """Running sums over frames from which the video scores follow: memory independent of length."""

    def __init__(self, class_term: torch.Tensor, object_logit_sum: torch.Tensor, frames: int, scoring: ScoringConfig):
        self.class_term = class_term  # (Q, C): sum_t of (p·u)^½, or of p when the IoU score is off
        self.object_logit_sum = object_logit_sum  # (Q, 2)
        self.frames = frames
        self.scoring = scoring

    @classmethod
    def empty(cls, queries: int, classes: int, scoring: ScoringConfig, device=None) -> VideoScoreSums:
        return cls(torch.zeros(queries, classes, device=device), torch.zeros(queries, 2, device=device), 0, scoring)

    def add(self, class_logits: torch.Tensor, ious: torch.Tensor, object_logits: torch.Tensor) -> None:
        """Add frames: class_logits (F, Q, C), ious (F, Q), object_logits (F, Q, 2), already matched."""
        probs = class_logits.softmax(-1)
        if self.scoring.weighted and self.scoring.iou_score:
            probs = (probs * ious.unsqueeze(-1)).sqrt()
        self.class_term += probs.sum(0)
        self.object_logit_sum += object_logits.sum(0)
        self.frames += class_logits.shape[0]

    def object_probs(self) -> torch.Tensor:
        """(Q,) softmax of the frame-mean object logits, probability of "object"."""
        return (self.object_logit_sum / self.frames).softmax(-1)[:, 0]

    def scores(self) -> torch.Tensor:
        """(Q, C) video scores."""
        if self.frames == 0:
            raise ValueError("no frames were added")
        mean = self.class_term / self.frames
        if self.scoring.weighted and self.scoring.object_score:
            return (mean * self.object_probs().unsqueeze(-1)).sqrt()
        return mean


def _weights(ious: torch.Tensor, object_probs: torch.Tensor, scoring: ScoringConfig) -> torch.Tensor | None:
    """The product of the enabled weighting factors (Q,), or None when nothing weights p."""
    if not scoring.weighted or not (scoring.iou_score or scoring.object_score):
        return None
    factors = torch.ones_like(object_probs)
    if scoring.iou_score:
        factors = factors * ious
    if scoring.object_score:
        factors = factors * object_probs
    return factors
