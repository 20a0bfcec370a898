"""Training losses of CLIP-VIS: object/no-object CE, point-sampled mask BCE and Dice, mask-IoU L1.

All targets are class-agnostic: every ground-truth instance is an "object" (index 0). Each prediction set
(the final one and, with deep supervision, every auxiliary one) is matched to the targets on its own.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from clipvis.training.matcher import HungarianMatcher
from clipvis.training.point_sampling import point_sample, uncertain_point_coords

LOSS_NAMES = ("loss_object_ce", "loss_mask", "loss_dice", "loss_iou")


def sigmoid_bce_loss(point_logits: torch.Tensor, point_labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """BCE averaged over points, summed over masks, divided by num_masks: (M, P), (M, P) → scalar."""
    loss = F.binary_cross_entropy_with_logits(point_logits, point_labels, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(point_logits: torch.Tensor, point_labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Dice loss with +1 smoothing, summed over masks, divided by num_masks: (M, P), (M, P) → scalar."""
    probs = point_logits.sigmoid()
    numerator = 2.0 * (probs * point_labels).sum(-1)
    denominator = probs.sum(-1) + point_labels.sum(-1)
    return (1.0 - (numerator + 1.0) / (denominator + 1.0)).sum() / num_masks


def point_mask_iou(point_logits: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
    """IoU of the binarised prediction (sigmoid > 0.5) with the labels on the points: (M, P) → (M,).

    No smoothing: an empty union gives NaN (such pairs are ignored by :func:`iou_l1_loss`).
    """
    predicted = (point_logits.sigmoid() > 0.5).to(point_labels.dtype)
    intersection = (predicted * point_labels).sum(-1)
    union = predicted.sum(-1) + point_labels.sum(-1) - intersection
    return intersection / union


def iou_l1_loss(pred_ious: torch.Tensor, target_ious: torch.Tensor) -> torch.Tensor:
    """Mean |pred − target| over the pairs whose target IoU is > 0 (NaN excluded); 0 if there are none."""
    counted = target_ious > 0
    if not counted.any():
        return pred_ious.sum() * 0.0
    return (pred_ious[counted] - target_ious[counted]).abs().mean()


def total_instances(targets: list[dict[str, torch.Tensor]], device: torch.device) -> float:
    """Ground-truth instances per process (averaged over DDP ranks when distributed), at least 1."""
    count = torch.tensor([float(sum(len(t["masks"]) for t in targets))], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count /= dist.get_world_size()
    return max(count.item(), 1.0)


class SetCriterion(nn.Module):
    """Matches each prediction set to the targets and computes the four unweighted losses.

    ``forward(outputs, targets)``: ``outputs`` as produced by :class:`QueryDecoder` (``pred_object_logits``,
    ``pred_ious``, ``pred_masks``, optionally ``aux_outputs``); ``targets`` a list of dicts with ``masks``
    (N_i, H, W), bool or float, on the canvas of the padded input image. Returns ``loss_*`` for the final
    set and ``loss_*_{i}`` for auxiliary set i; ``weight_dict`` gives the weight of every key.
    ``num_aux_outputs`` is the number of auxiliary sets to expect (the decoder's layer count).
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_object: float = 2.0,
        weight_iou: float = 2.0,
        weight_mask: float = 5.0,
        weight_dice: float = 5.0,
        no_object_weight: float = 0.4,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75,
        deep_supervision: bool = True,
        num_aux_outputs: int = 9,
    ):
        super().__init__()
        self.matcher = matcher
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_ratio = importance_ratio
        self.num_aux_outputs = num_aux_outputs if deep_supervision else 0
        self.no_object_weight = no_object_weight

        base_weights = dict(zip(LOSS_NAMES, (weight_object, weight_mask, weight_dice, weight_iou)))
        self.weight_dict = dict(base_weights)
        for i in range(self.num_aux_outputs):
            self.weight_dict.update({f"{name}_{i}": weight for name, weight in base_weights.items()})

    def forward(
        self,
        outputs: dict,
        targets: list[dict[str, torch.Tensor]],
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted losses; ``generator`` (on the predictions' device) fixes every random point."""
        device = outputs["pred_masks"].device
        if len({tuple(t["masks"].shape[-2:]) for t in targets}) > 1:
            raise ValueError("target masks of one batch must share the padded canvas size (H, W)")
        targets = [{"masks": t["masks"].to(device, torch.float32)} for t in targets]
        num_masks = total_instances(targets, device)

        prediction_sets = [("", outputs)]
        if self.num_aux_outputs:
            aux_outputs = outputs.get("aux_outputs", [])
            if len(aux_outputs) != self.num_aux_outputs:
                raise ValueError(
                    f"expected {self.num_aux_outputs} auxiliary prediction sets, got {len(aux_outputs)}; "
                    "num_aux_outputs must equal the decoder's layer count and the decoder must return them"
                )
            prediction_sets += [(f"_{i}", aux) for i, aux in enumerate(aux_outputs)]

        losses = {}
        for suffix, predictions in prediction_sets:
            indices = self.matcher(predictions, targets, generator)
            for name, value in self.set_losses(predictions, targets, indices, num_masks, generator).items():
                losses[name + suffix] = value
        return losses

    def total_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the losses returned by :meth:`forward`."""
        return sum(self.weight_dict[name] * value for name, value in losses.items())

    def set_losses(
        self,
        predictions: dict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        num_masks: float,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """The four losses of one prediction set, given its matching."""
        device = predictions["pred_masks"].device
        image_of_match = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(device)
        query_of_match = torch.cat([q for q, _ in indices]).to(device)

        object_logits = predictions["pred_object_logits"].float()  # (B, Q, 2)
        is_no_object = torch.ones(object_logits.shape[:2], dtype=torch.int64, device=object_logits.device)
        is_no_object[image_of_match, query_of_match] = 0
        class_weight = torch.tensor([1.0, self.no_object_weight], device=object_logits.device)
        loss_object = F.cross_entropy(object_logits.transpose(1, 2), is_no_object, class_weight)

        pred_masks = predictions["pred_masks"][image_of_match, query_of_match].float()  # (M, h, w)
        with torch.no_grad():
            coords = uncertain_point_coords(
                pred_masks, self.num_points, self.oversample_ratio, self.importance_ratio, generator
            )  # (M, P, 2)
            matches_per_image = [len(q) for q, _ in indices]
            point_labels = torch.cat([
                point_sample(target["masks"][tgt_idx.to(device)].unsqueeze(1), image_coords).squeeze(1)
                for target, (_, tgt_idx), image_coords in zip(targets, indices, coords.split(matches_per_image))
            ])  # (M, P)
        point_logits = point_sample(pred_masks.unsqueeze(1), coords).squeeze(1)  # (M, P)
        pred_ious = predictions["pred_ious"][image_of_match, query_of_match, 0].float()  # (M,)

        return {
            "loss_object_ce": loss_object,
            "loss_mask": sigmoid_bce_loss(point_logits, point_labels, num_masks),
            "loss_dice": dice_loss(point_logits, point_labels, num_masks),
            "loss_iou": iou_l1_loss(pred_ious, point_mask_iou(point_logits.detach(), point_labels)),
        }
