"""Sine positional encoding of a feature map (DETR / Mask2Former style)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

CACHE_SIZE = 8  # map sizes kept (a few levels of one or two input sizes)


class PositionEmbeddingSine(nn.Module):
    """Fixed 2-D sine/cosine encoding: `num_pos_feats` channels for y, then as many for x.

    Positions are the 1-based row/column numbers, divided by the map size and multiplied by `scale`
    when `normalize`. Channel pair (2i, 2i+1) holds sin/cos of position / temperature^(2i/num_pos_feats).
    """

    def __init__(
        self, num_pos_feats: int = 128, temperature: float = 10000, normalize: bool = True, scale: float | None = None
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: dict[tuple, Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W), only its size and device are used. Returns (B, 2·num_pos_feats, H, W) float32.

        The result is a cached tensor expanded over the batch: read it, never modify it in place.
        """
        batch, _, height, width = x.shape
        if torch.compiler.is_compiling():  # a compiled graph computes it; the cache (a dict) would force recompiles
            return self._encode(height, width, x.device).expand(batch, -1, -1, -1)
        key = (height, width, x.device)
        pos = self._cache.pop(key, None)
        if pos is None:
            pos = self._encode(height, width, x.device)
        self._cache[key] = pos  # most recently used last
        if len(self._cache) > CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        return pos.expand(batch, -1, -1, -1)

    def _encode(self, height: int, width: int, device: torch.device) -> Tensor:
        y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
        x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            y = y / (height + eps) * self.scale
            x = x / (width + eps) * self.scale
        channel = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        wavelength = self.temperature ** (2 * (channel // 2) / self.num_pos_feats)  # (F,)
        is_sin = channel % 2 == 0
        angles_y = y[:, None] / wavelength  # (H, F)
        angles_x = x[:, None] / wavelength  # (W, F)
        enc_y = torch.where(is_sin, angles_y.sin(), angles_y.cos())
        enc_x = torch.where(is_sin, angles_x.sin(), angles_x.cos())
        pos_y = enc_y.t()[:, :, None].expand(-1, height, width)  # (F, H, W)
        pos_x = enc_x.t()[:, None, :].expand(-1, height, width)
        return torch.cat([pos_y, pos_x], 0)[None]  # (1, 2F, H, W)
