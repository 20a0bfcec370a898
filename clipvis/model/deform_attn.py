"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch, fast on CPU.

Each query and head reads `levels · points` bilinear samples of the value maps and sums them with
its attention weights. The core folds the attention weight into the four bilinear corner weights,
so the whole operation is one weighted gather-and-sum: `F.embedding_bag` over the value rows, with
48 (row index, weight) pairs per (query, head) at the default sizes. Nothing of size
`samples × head_dim` is ever materialised, unlike the grid_sample formulation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_core(
    value: Tensor, spatial_shapes: Tensor, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Bilinear multi-scale sampling, weighted and summed per query and head.

    value: (N, S, heads, head_dim), the levels' maps flattened row-major and concatenated in order
    spatial_shapes: (levels, 2) int64 rows (H, W); S = Σ H·W
    sampling_locations: (N, Lq, heads, levels, points, 2) as (x, y), 0..1 spans the map
    attention_weights: (N, Lq, heads, levels, points)
    returns (N, Lq, heads · head_dim)

    Same as `grid_sample(bilinear, zeros padding, align_corners=False)` at each point: pixel
    coordinate x·W − 0.5, corners outside the map count as zero. Differentiable in value,
    sampling_locations and attention_weights.
    """
    n, s, heads, head_dim = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    bags, k = n * lq * heads, levels * points  # one bag per (image, query, head); k points each
    index_dtype = torch.int32 if n * s * heads < 2**31 else torch.int64
    device, dtype = value.device, sampling_locations.dtype

    # Per-point constants over the k = (level, point) axis, which is the inner axis below.
    height = spatial_shapes[:, 0].repeat_interleave(points).to(device)  # (k,)
    width = spatial_shapes[:, 1].repeat_interleave(points).to(device)
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start = (areas.cumsum(0) - areas).repeat_interleave(points).to(device, index_dtype)
    last_x, last_y = (width - 1).to(dtype), (height - 1).to(dtype)

    loc_x, loc_y = sampling_locations.reshape(bags, k, 2).unbind(-1)
    pixel_x = loc_x * width.to(dtype) - 0.5  # (bags, k)
    pixel_y = loc_y * height.to(dtype) - 0.5
    # Corner grid lines, without gradient. nan_to_num keeps a NaN location out of the row indices;
    # it stays NaN in the fractions, so the output is NaN.
    left, top = pixel_x.detach().floor().nan_to_num(), pixel_y.detach().floor().nan_to_num()
    right, bottom = left + 1, top + 1
    frac_x, frac_y = pixel_x - left, pixel_y - top
    # Corners are clamped into the map; one that moved (by a whole pixel or more) lay outside and
    # weighs 0. These 0/1 factors use float arithmetic: much cheaper on CPU than boolean masks.
    left_in = left.clamp(min=0).minimum(last_x)
    right_in = right.clamp(min=0).minimum(last_x)
    top_in = top.clamp(min=0).minimum(last_y)
    bottom_in = bottom.clamp(min=0).minimum(last_y)
    attn = attention_weights.reshape(bags, k)
    weight_left = (1 - frac_x) * (1 - (left_in - left).abs()).clamp(min=0)
    weight_right = frac_x * (1 - (right_in - right).abs()).clamp(min=0)
    weight_top = attn * (1 - frac_y) * (1 - (top_in - top).abs()).clamp(min=0)
    weight_bottom = attn * frac_y * (1 - (bottom_in - bottom).abs()).clamp(min=0)

    # Row of `value` viewed as a (N·S·heads, head_dim) table: (image·S + level_start + y·W + x)·heads + head.
    bag_offset = torch.arange(n, device=device, dtype=index_dtype).view(n, 1, 1) * (s * heads)
    bag_offset = (bag_offset + torch.arange(heads, device=device, dtype=index_dtype)).expand(n, lq, heads)
    row_base = level_start * heads + bag_offset.reshape(bags, 1)  # (bags, k)
    row_stride = width.to(index_dtype) * heads
    row_top = top_in.to(index_dtype) * row_stride + row_base
    row_bottom = bottom_in.to(index_dtype) * row_stride + row_base
    col_left = left_in.to(index_dtype) * heads
    col_right = right_in.to(index_dtype) * heads

    # (bags, 4, k): the four corners of every point, each corner block contiguous.
    rows = torch.stack([row_top + col_left, row_top + col_right, row_bottom + col_left, row_bottom + col_right], 1)
    corner_weights = [weight_top * weight_left, weight_top * weight_right]
    corner_weights += [weight_bottom * weight_left, weight_bottom * weight_right]
    weights = torch.stack(corner_weights, 1)
    out = F.embedding_bag(
        rows.view(bags, 4 * k),
        value.reshape(n * s * heads, head_dim),
        per_sample_weights=weights.view(bags, 4 * k).to(value.dtype),
        mode="sum",
    )
    return out.view(n, lq, heads * head_dim)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: each query attends to `points` learnt offsets per head
    and level around its reference point."""

    def __init__(self, d_model: int = 256, levels: int = 3, heads: int = 8, points: int = 4):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.levels, self.heads, self.points = levels, heads, points
        self.sampling_offsets = nn.Linear(d_model, heads * levels * points * 2)
        self.attention_weights = nn.Linear(d_model, heads * levels * points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR init: offsets start on 8 compass directions (for 8 heads), point i at
        distance i+1 pixels; uniform attention; xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float64) * (2 * math.pi / self.heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)  # (heads, 2) as (x, y)
        directions = directions / directions.abs().amax(-1, keepdim=True)  # onto the unit square
        distance = torch.arange(1, self.points + 1, dtype=torch.float64).view(1, 1, self.points, 1)
        grid = directions.view(self.heads, 1, 1, 2) * distance  # (heads, 1, points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.expand(-1, self.levels, -1, -1).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, value_input: Tensor, spatial_shapes: Tensor) -> Tensor:
        """query: (N, Lq, C); reference_points: (N or 1, Lq, 2) as (x, y) in 0..1, the same on every level;
        value_input: (N, S, C) levels flattened and concatenated; spatial_shapes: (levels, 2) (H, W).
        Returns (N, Lq, C)."""
        n, lq, _ = query.shape
        value = self.value_proj(value_input).view(n, value_input.shape[1], self.heads, -1)
        # Offsets are in pixels of each level: the division by the level's (W, H) is folded into the
        # layer, and the reference (x, y) is added to every (head, level, point) by a 0/1 matrix.
        scale = 1 / spatial_shapes.flip(-1).to(query)  # (levels, 2) as (1/W, 1/H)
        scale = scale[None, :, None, :].expand(self.heads, -1, self.points, -1).reshape(-1)
        offsets = F.linear(query, self.sampling_offsets.weight * scale[:, None], self.sampling_offsets.bias * scale)
        to_every_point = torch.eye(2, dtype=query.dtype, device=query.device).repeat(1, scale.numel() // 2)
        reference = reference_points.expand(n, lq, 2).reshape(n * lq, 2)
        locations = torch.addmm(offsets.view(n * lq, -1), reference, to_every_point)
        locations = locations.view(n, lq, self.heads, self.levels, self.points, 2)
        # Softmax over levels·points, written out: torch.softmax is slow on CPU for a last dim of 12.
        logits = self.attention_weights(query).view(n, lq, self.heads, self.levels * self.points)
        attn = (logits - logits.amax(-1, keepdim=True).detach()).exp()
        attn = (attn / attn.sum(-1, keepdim=True)).view(n, lq, self.heads, self.levels, self.points)
        return self.output_proj(ms_deform_attn_core(value, spatial_shapes, locations, attn))
