"""Class-agnostic Hungarian matching between predicted queries and ground-truth masks.

Cost of giving target j to query i (per image):
    C[i, j] = cost_mask · BCE(i, j) + cost_dice · Dice(i, j) − cost_object · P_obj(i)
with BCE and Dice measured on ``num_points`` uniform random points shared by every prediction and
target of the image, and P_obj the softmax probability of "object" (index 0).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from clipvis.training.point_sampling import point_sample


def pairwise_sigmoid_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid BCE over points for every pair: logits (Q, P), targets (N, P) → (Q, N)."""
    loss_if_positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    loss_if_negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    total = loss_if_positive @ targets.T + loss_if_negative @ (1.0 - targets).T
    return total / logits.shape[1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss with +1 smoothing for every pair: logits (Q, P), targets (N, P) → (Q, N)."""
    probs = logits.sigmoid()
    numerator = 2.0 * probs @ targets.T
    denominator = probs.sum(-1, keepdim=True) + targets.sum(-1)[None, :]
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def assign(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost assignment of a (Q, N) cost; non-finite entries become finite placeholders.

    +inf and NaN become a value above anything an assignment of finite entries could cost, −inf one
    below, so an assignment avoids (or takes) them whenever it can.
    """
    cost = cost.detach().to("cpu", torch.float64).numpy()
    finite = np.isfinite(cost)
    if not finite.all():
        values = cost[finite]
        low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
        margin = min(cost.shape) * (high - low) + 1.0
        cost = np.where(np.isneginf(cost), low - margin, np.where(finite, cost, high + margin))
    pred_idx, tgt_idx = linear_sum_assignment(cost)
    return torch.as_tensor(pred_idx, dtype=torch.int64), torch.as_tensor(tgt_idx, dtype=torch.int64)


class HungarianMatcher(nn.Module):
    """One-to-one matching of queries to target masks, image by image.

    ``forward(outputs, targets)``: ``outputs`` has ``pred_object_logits`` (B, Q, 2) and ``pred_masks``
    (B, Q, h, w); ``targets`` is a list of B dicts whose ``masks`` (N_i, H, W) lie on the same canvas as
    the predictions (the padded input image). Returns B pairs (pred_idx, tgt_idx) of int64 tensors of
    length min(Q, N_i), pred_idx ascending.
    """

    def __init__(
        self, cost_mask: float = 5.0, cost_dice: float = 5.0, cost_object: float = 2.0, num_points: int = 12544
    ):
        super().__init__()
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.cost_object = cost_object
        self.num_points = num_points

    @torch.no_grad()
    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        generator: torch.Generator | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match every image; ``generator`` (on the predictions' device) fixes the sampled points."""
        object_prob = outputs["pred_object_logits"].float().softmax(-1)[..., 0]  # (B, Q)
        indices = []
        for b, target in enumerate(targets):
            pred_masks = outputs["pred_masks"][b]  # (Q, h, w)
            coords = torch.rand(1, self.num_points, 2, device=pred_masks.device, generator=generator)
            with torch.autocast(pred_masks.device.type, enabled=False):
                # Masks as channels of one map: every mask is read at the same points.
                pred_points = point_sample(pred_masks[None].float(), coords)[0]  # (Q, P)
                target_points = point_sample(target["masks"][None].to(pred_points), coords)[0]  # (N, P)
                indices.append(assign(self.point_cost(object_prob[b], pred_points, target_points)))
        return indices

    def point_cost(
        self, object_prob: torch.Tensor, pred_points: torch.Tensor, target_points: torch.Tensor
    ) -> torch.Tensor:
        """(Q, N) cost from P(object) (Q,), mask logits (Q, P) and target labels (N, P) at shared points."""
        return (
            self.cost_mask * pairwise_sigmoid_bce(pred_points, target_points)
            + self.cost_dice * pairwise_dice(pred_points, target_points)
            - self.cost_object * object_prob[:, None]
        )
