"""Mask2Former pixel decoder: a deformable-attention encoder over strides 32/16/8 and one FPN level
at stride 4 (docs/method.md §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipvis.model.deform_attn import MSDeformAttn
from clipvis.model.position_encoding import PositionEmbeddingSine

ENCODER_FEATURES = ("res5", "res4", "res3")  # low to high resolution, as the levels are ordered
FPN_FEATURE = "res2"


class DeformableEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention over all levels, then a ReLU FFN."""

    def __init__(self, d_model: int, ffn_dim: int, heads: int, levels: int, points: int, dropout: float):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, levels, heads, points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, sizes: list[tuple[int, int]]) -> Tensor:
        """src, pos: (N, S, C); reference_points: (N or 1, S, 2); sizes: (H, W) of each level. Returns (N, S, C)."""
        attended = self.self_attn(src + pos, reference_points, src, sizes)
        src = self.norm1(src + self.dropout(attended))
        hidden = self.dropout(F.relu(self.linear1(src), inplace=True))
        return self.norm2(src + self.dropout(self.linear2(hidden)))


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, bias: bool) -> nn.Sequential:
    """Conv (same padding) + GroupNorm(32)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    return nn.Sequential(conv, nn.GroupNorm(32, out_channels))


def pixel_centres(sizes: list[tuple[int, int]], device: torch.device) -> Tensor:
    """(1, Σ H·W, 2) centres (x, y) of every pixel of every level, in 0..1, rows in flattening order."""
    centres = []
    for height, width in sizes:
        y = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        x = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
        centres.append(torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1))
    return torch.cat(centres)[None]


class PixelDecoder(nn.Module):
    """features res2..res5 → (mask_features (B, mask_dim, H/4, W/4), [stride 32, 16, 8] maps (B, conv_dim, h, w))."""

    def __init__(
        self,
        in_channels: list[int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        encoder_layers: int = 6,
        heads: int = 8,
        points: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.0,
    ):
        """in_channels: channels of res2, res3, res4, res5."""
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"in_channels must list res2..res5 (4 values), got {in_channels}")
        levels = len(ENCODER_FEATURES)
        res2_channels, *encoder_channels = in_channels
        self.input_proj = nn.ModuleList(conv_norm(c, conv_dim, 1, bias=True) for c in reversed(encoder_channels))
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.level_embed = nn.Parameter(torch.empty(levels, conv_dim))
        self.encoder = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, ffn_dim, heads, levels, points, dropout) for _ in range(encoder_layers)
        )
        self.lateral_conv = conv_norm(res2_channels, conv_dim, 1, bias=False)
        self.output_conv = nn.Sequential(*conv_norm(conv_dim, conv_dim, 3, bias=False), nn.ReLU(inplace=True))
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Mask2Former init: xavier input projections and encoder matrices (deformable attention
        keeps its own init), normal level embedding, Caffe2-xavier FPN and mask convs, zero biases."""
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        for param in self.encoder.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
        for layer in self.encoder:
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)
        for conv in (self.lateral_conv[0], self.output_conv[0], self.mask_features):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, features: dict[str, Tensor], bf16: bool = False) -> tuple[Tensor, list[Tensor]]:
        """features: "res2".."res5" (B, C_i, H/4..H/32, W/4..W/32). Computed in float32 whatever the
        caller's autocast (as the reference), or under bfloat16 autocast when `bf16` (an inference option)."""
        with torch.autocast(features[FPN_FEATURE].device.type, dtype=torch.bfloat16, enabled=bf16):
            multi_scale = self.encode(features)
            res2 = self.lateral_conv(features[FPN_FEATURE].float())
            top_down = F.interpolate(multi_scale[-1], size=res2.shape[-2:], mode="bilinear", align_corners=False)
            return self.mask_features(self.output_conv(res2 + top_down)), multi_scale

    def encode(self, features: dict[str, Tensor]) -> list[Tensor]:
        """The deformable encoder over res5, res4, res3 → their (B, conv_dim, h, w) outputs, same order."""
        maps = [proj(features[name].float()) for name, proj in zip(ENCODER_FEATURES, self.input_proj)]
        batch, channels = maps[0].shape[:2]
        sizes = [tuple(m.shape[-2:]) for m in maps]  # (H, W) of each level
        src = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)  # (B, S, C)
        pos = torch.cat(
            [self.pe_layer(m).flatten(2).transpose(1, 2) + embed for m, embed in zip(maps, self.level_embed)], 1
        )
        reference_points = pixel_centres(sizes, src.device)
        for layer in self.encoder:
            src = layer(src, pos, reference_points, sizes)
        areas = [h * w for h, w in sizes]
        return [
            level.transpose(1, 2).reshape(batch, channels, h, w)
            for level, (h, w) in zip(src.split(areas, 1), sizes)
        ]
