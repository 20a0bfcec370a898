"""Reading mask logits at continuous points, and choosing the points where a mask is least certain.

Points are (x, y) in [0, 1]², relative to the whole map; values come from bilinear interpolation with
``align_corners=False`` and zeros outside the map (as PointRend's ``point_sample``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``maps`` (N, C, H, W) at ``coords`` (N, P, 2) in [0, 1]² → (N, C, P)."""
    grid = 2.0 * coords.unsqueeze(2) - 1.0  # (N, P, 1, 2) in grid_sample's [-1, 1]
    return F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", align_corners=False).squeeze(3)


def uncertain_point_coords(
    logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Points biased toward uncertain pixels of each mask: (R, H, W) logits → (R, num_points, 2).

    Draws ``oversample_ratio · num_points`` uniform points, keeps the ``importance_ratio · num_points``
    with the highest uncertainty −|logit|, and fills the rest with fresh uniform points.
    """
    num_masks = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    num_uncertain = int(num_points * importance_ratio)
    device = logits.device

    candidates = torch.rand(num_masks, num_candidates, 2, device=device, generator=generator)
    uncertainty = -point_sample(logits.unsqueeze(1), candidates).squeeze(1).abs()  # (R, num_candidates)
    keep = uncertainty.topk(num_uncertain, dim=1).indices  # (R, num_uncertain)
    uncertain = candidates.gather(1, keep.unsqueeze(2).expand(-1, -1, 2))
    uniform = torch.rand(num_masks, num_points - num_uncertain, 2, device=device, generator=generator)
    return torch.cat([uncertain, uniform], dim=1)
