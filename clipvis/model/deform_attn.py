"""Multi-scale deformable attention (Deformable DETR) in plain PyTorch, fast on CPU.

Each query and head reads `levels · points` bilinear samples of the value maps and sums them with
its attention weights. Two formulations of the same sum, one for each direction of autograd:
- without gradients (inference), the core folds the attention weight into the four bilinear corner
  weights, so the whole operation is one weighted gather-and-sum: `F.embedding_bag` over the value
  rows, with 48 (row index, weight) pairs per (query, head) at the default sizes. Nothing of size
  `samples × head_dim` is materialised. This is 3× faster than grid_sample's forward on CPU;
- with gradients (training), `grid_sample` per level, then the weighted sum. Its backward is 2.5×
  faster on CPU than embedding_bag's, whose weighted backward sorts the rows and adds them one by one.
The two agree to float rounding (tests/test_deform_attn.py).
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn_core(
    value: Tensor, sizes: Sequence[tuple[int, int]], sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Bilinear multi-scale sampling, weighted and summed per query and head.

    value: (N, S, heads, head_dim), the levels' maps flattened row-major and concatenated in order
    sizes: (H, W) of each level, Python ints (so that torch.compile sees constants); S = Σ H·W
    sampling_locations: (N, Lq, heads, levels, points, 2) as (x, y), 0..1 spans the map
    attention_weights: (N, Lq, heads, levels, points)
    returns (N, Lq, heads · head_dim)

    Same as `grid_sample(bilinear, zeros padding, align_corners=False)` at each point: pixel
    coordinate x·W − 0.5, corners outside the map count as zero. Differentiable in value,
    sampling_locations and attention_weights: when autograd records, `grid_sampled_core` computes it.
    """
    inputs = (value, sampling_locations, attention_weights)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs):
        return grid_sampled_core(value, sizes, sampling_locations, attention_weights)
    return _gathered_core(value, sizes, sampling_locations, attention_weights)


def grid_sampled_core(
    value: Tensor, sizes: Sequence[tuple[int, int]], sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """`ms_deform_attn_core` as grid_sample per level, stacked, then the weighted sum over levels · points.
    It samples in the locations' dtype (float32 also under a bfloat16 autocast) and returns value's dtype."""
    n, _, heads, head_dim = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    samples = []
    for level, (level_value, (h, w)) in enumerate(zip(value.split([h * w for h, w in sizes], 1), sizes)):
        grid = 2 * sampling_locations[:, :, :, level].transpose(1, 2).reshape(n * heads, lq, points, 2) - 1
        maps = level_value.permute(0, 2, 3, 1).reshape(n * heads, head_dim, h, w).to(grid.dtype)
        samples.append(F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # (N·heads, head_dim, Lq, points)
    stacked = torch.stack(samples, -2).flatten(-2)  # (N·heads, head_dim, Lq, levels·points)
    weights = attention_weights.transpose(1, 2).reshape(n * heads, 1, lq, levels * points).to(stacked.dtype)
    out = (stacked * weights).sum(-1).view(n, heads * head_dim, lq).transpose(1, 2)
    return out.to(value.dtype)


def _gathered_core(
    value: Tensor, sizes: Sequence[tuple[int, int]], sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """`ms_deform_attn_core` as one weighted `embedding_bag` over the value rows.

    The maps are read through a zero border (one pixel before, two after, in x and y), and each
    point is clamped into [−1, W] × [−1, H]: then all four corners of every point are rows of the
    bordered maps, and a corner outside the map reads zero. A point clamped in x (or y) had both
    its corners in x (or y) outside the map, so it read zero before as after.
    """
    n, s, heads, head_dim = value.shape
    _, lq, _, levels, points, _ = sampling_locations.shape
    bags, k = n * lq * heads, levels * points  # one bag per (image, query, head); k points each
    bordered = [(h + 3, w + 3) for h, w in sizes]
    rows_per_image = sum(h * w for h, w in bordered) * heads
    index_dtype = torch.int32 if n * rows_per_image < 2**31 else torch.int64
    device, dtype = value.device, sampling_locations.dtype

    # The bordered maps as a table of (N · S' · heads) rows of head_dim: row (image·S' + position)·heads + head.
    table = value.new_zeros(n, rows_per_image // heads, heads * head_dim)
    start = 0
    for level_value, (h, w), (bordered_h, bordered_w) in zip(value.split([h * w for h, w in sizes], 1), sizes, bordered):
        block = table[:, start:start + bordered_h * bordered_w].view(n, bordered_h, bordered_w, -1)
        block[:, 1:h + 1, 1:w + 1] = level_value.reshape(n, h, w, -1)
        start += bordered_h * bordered_w

    # Per-point constants over the k = (level, point) axis, which is the inner axis below.
    def per_point(values: list[float]) -> Tensor:
        return torch.tensor(values, dtype=dtype).repeat_interleave(points).to(device)

    width, height = per_point([w for _, w in sizes]), per_point([h for h, _ in sizes])
    lowest = torch.full_like(width, -1.0)
    row_stride = per_point([bordered_w * heads for _, bordered_w in bordered])  # one row of a bordered map
    starts = [0, *itertools.accumulate(bh * bw for bh, bw in bordered)][:-1]
    # Row of pixel (0, 0) of each level: past the level's start, the top border row and the left border column.
    origin = per_point([(start + bordered_w + 1) * heads for start, (_, bordered_w) in zip(starts, bordered)])

    loc_x, loc_y = sampling_locations.reshape(bags, k, 2).unbind(-1)
    pixel_x = torch.clamp(loc_x * width - 0.5, lowest, width)  # (bags, k)
    pixel_y = torch.clamp(loc_y * height - 0.5, lowest, height)
    left, top = pixel_x.detach().floor(), pixel_y.detach().floor()
    frac_x, frac_y = pixel_x - left, pixel_y - top
    # Top-left corner rows, exact in float32 (< 2^24 per image). nan_to_num keeps a NaN location out
    # of the row indices; it stays NaN in the fractions, so the output is NaN.
    top_left = torch.addcmul(origin, top, row_stride).add_(left, alpha=heads).nan_to_num_(0.0).to(index_dtype)
    image_head = torch.arange(n, device=device, dtype=index_dtype).view(n, 1, 1) * rows_per_image
    image_head = (image_head + torch.arange(heads, device=device, dtype=index_dtype)).expand(n, lq, heads)
    top_left += image_head.reshape(bags, 1)
    below = top_left + row_stride.to(index_dtype)
    # (bags, 4, k): the corners top-left, top-right, bottom-left, bottom-right of every point.
    rows = torch.stack([top_left, top_left + heads, below, below + heads], 1)
    weight_left, weight_right = 1 - frac_x, frac_x
    attn = attention_weights.reshape(bags, k)
    weight_top, weight_bottom = attn * (1 - frac_y), attn * frac_y
    weights = torch.stack([weight_top * weight_left, weight_top * weight_right,
                           weight_bottom * weight_left, weight_bottom * weight_right], 1)
    out = F.embedding_bag(
        rows.view(bags, 4 * k),
        table.view(-1, head_dim),
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

    def forward(self, query: Tensor, reference_points: Tensor, value_input: Tensor,
                sizes: Sequence[tuple[int, int]]) -> Tensor:
        """query: (N, Lq, C); reference_points: (N or 1, Lq, 2) as (x, y) in 0..1, the same on every level;
        value_input: (N, S, C) levels flattened and concatenated; sizes: (H, W) of each level, Python ints.
        Returns (N, Lq, C)."""
        n, lq, _ = query.shape
        value = self.value_proj(value_input).view(n, value_input.shape[1], self.heads, -1)
        # Offsets are in pixels of each level: the division by the level's (W, H) is folded into the
        # layer, and the reference (x, y) is added to every (head, level, point) by a 0/1 matrix.
        # The offsets and the attention logits come from one matrix product.
        scale = 1 / query.new_tensor([(w, h) for h, w in sizes])  # (levels, 2) as (1/W, 1/H)
        scale = scale[None, :, None, :].expand(self.heads, -1, self.points, -1).reshape(-1)
        # Sampling locations need float32 also under a bfloat16 autocast: 8 bits of mantissa would move
        # a point by up to a third of a pixel on an 80-pixel map.
        weight = torch.cat([self.sampling_offsets.weight * scale[:, None], self.attention_weights.weight])
        bias = torch.cat([self.sampling_offsets.bias * scale, self.attention_weights.bias])
        with torch.autocast(query.device.type, enabled=False):
            projected = F.linear(query.float(), weight, bias)
            offsets, logits = projected.split([scale.numel(), self.levels * self.points * self.heads], -1)
            to_every_point = torch.eye(2, dtype=query.dtype, device=query.device).repeat(1, scale.numel() // 2)
            reference = reference_points.expand(n, lq, 2).reshape(n * lq, 2)
            locations = torch.addmm(offsets.reshape(n * lq, -1), reference, to_every_point)
        locations = locations.view(n, lq, self.heads, self.levels, self.points, 2)
        # Softmax over levels·points, written out: torch.softmax is slow on CPU for a last dim of 12.
        logits = logits.reshape(n, lq, self.heads, self.levels * self.points)
        attn = (logits - logits.amax(-1, keepdim=True).detach()).exp()
        attn = (attn / attn.sum(-1, keepdim=True)).view(n, lq, self.heads, self.levels, self.points)
        return self.output_proj(ms_deform_attn_core(value, sizes, locations, attn))
