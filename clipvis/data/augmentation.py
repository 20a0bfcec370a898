"""Training augmentations of an image and its instance masks, driven by an explicit numpy Generator.

Every augmentation is called as ``augment(image, masks, rng) -> (image, masks)`` with
image (3, H, W) uint8 RGB and masks (N, H, W) bool; the outputs share one size. Nothing here
touches a global random state, so a sample is a pure function of its generator's seed.

- `LargeScaleJitter` (image training, docs/method.md §6.8): random horizontal flip, then
  detectron2's ResizeScale and FixedSizeCrop.
- `ShortestEdgeResize` (video fine-tuning): detectron2's ResizeShortestEdge ("choice") and a
  random horizontal flip.

Images are resized bilinearly with antialiasing (as PIL's bilinear, which detectron2 uses). Masks
are resized the same way as 0/255 values and kept where the result is at least half, so they stay
aligned with the image (close to rasterising the polygons at the new size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from clipvis.errors import InputError

PAD_VALUE = 128  # image fill of FixedSizeCrop (detectron2's default); masks are padded with 0
FLIP_PROBABILITY = 0.5
CONFIG_SOURCE = "training config"


class Augmentation(Protocol):
    def __call__(self, image: torch.Tensor, masks: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


def hflip(image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return image.flip(-1), masks.flip(-1)


def resize(image: torch.Tensor, masks: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (3, H, W) uint8 and masks (N, H, W) bool resized to (height, width)."""
    if image.shape[-2:] == (height, width):
        return image, masks
    image = F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]
    levels = masks[:, None].to(torch.uint8) * 255  # (N, 1, H, W)
    levels = F.interpolate(levels, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return image, levels[:, 0] >= 128


def crop_and_pad(image: torch.Tensor, masks: torch.Tensor, top: int, left: int,
                 size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The size x size window at (top, left), padded at the bottom and right where the input is smaller."""
    image = image[:, top:top + size, left:left + size]
    masks = masks[:, top:top + size, left:left + size]
    height, width = image.shape[-2:]
    if (height, width) == (size, size):
        return image, masks
    padded_image = image.new_full((3, size, size), PAD_VALUE)
    padded_image[:, :height, :width] = image
    padded_masks = masks.new_zeros((masks.shape[0], size, size))
    padded_masks[:, :height, :width] = masks
    return padded_image, padded_masks


def scaled_size(height: int, width: int, target: int, scale: float) -> tuple[int, int]:
    """ResizeScale's output size: the largest of aspect ratio (height : width) inside target*scale squared."""
    factor = min(target * scale / height, target * scale / width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """ResizeShortestEdge's output size: the short side `short`, the long side at most `max_size`."""
    scale = short / min(height, width)
    new_height, new_width = height * scale, width * scale
    if max(new_height, new_width) > max_size:
        shrink = max_size / max(new_height, new_width)
        new_height, new_width = new_height * shrink, new_width * shrink
    return int(new_height + 0.5), int(new_width + 0.5)


@dataclass(frozen=True)
class LargeScaleJitter:
    """Flip with probability 1/2, resize by a uniform scale in [min_scale, max_scale] of the
    image_size square (aspect ratio kept), then take an image_size square: a random window
    if larger, padding at the bottom and right if smaller.

    As detectron2's FixedSizeCrop, one uniform draw places the window along both axes.
    Random draws, in order: flip, scale, window.
    """

    image_size: int
    min_scale: float
    max_scale: float

    def __call__(self, image: torch.Tensor, masks: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if rng.random() < FLIP_PROBABILITY:
            image, masks = hflip(image, masks)
        scale = rng.uniform(self.min_scale, self.max_scale)
        height, width = scaled_size(*image.shape[-2:], self.image_size, scale)
        image, masks = resize(image, masks, height, width)
        position = rng.random()
        top = round(max(height - self.image_size, 0) * position)
        left = round(max(width - self.image_size, 0) * position)
        return crop_and_pad(image, masks, top, left, self.image_size)


@dataclass(frozen=True)
class ShortestEdgeResize:
    """Resize so the short side is one of `min_sizes` (uniform choice) and the long side at most
    `max_size`, then flip with probability 1/2. Random draws, in order: size, flip."""

    min_sizes: tuple[int, ...]
    max_size: int

    def __call__(self, image: torch.Tensor, masks: torch.Tensor,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        short = self.min_sizes[int(rng.integers(len(self.min_sizes)))]
        image, masks = resize(image, masks, *shortest_edge_size(*image.shape[-2:], short, self.max_size))
        if rng.random() < FLIP_PROBABILITY:
            image, masks = hflip(image, masks)
        return image, masks


def build_augmentation(kind: str, image_size: int, lsj_scale: list[float], min_size_train: list[int],
                       max_size_train: int) -> Augmentation:
    """The training augmentation named by `train.augmentation` ("lsj" or "resize_shortest")."""
    if kind == "lsj":
        if image_size < 1:
            raise InputError(CONFIG_SOURCE, "train.image_size", f"must be a positive integer, got {image_size}")
        if len(lsj_scale) != 2 or not 0 < lsj_scale[0] <= lsj_scale[1]:
            raise InputError(CONFIG_SOURCE, "train.lsj_scale",
                             f"must be [min, max] with 0 < min <= max, got {lsj_scale}")
        return LargeScaleJitter(image_size, float(lsj_scale[0]), float(lsj_scale[1]))
    if kind == "resize_shortest":
        if not min_size_train or min(min_size_train) < 1:
            raise InputError(CONFIG_SOURCE, "train.min_size_train",
                             f"must be a non-empty list of positive sizes, got {min_size_train}")
        if max_size_train < 1:
            raise InputError(CONFIG_SOURCE, "train.max_size_train", f"must be a positive integer, got {max_size_train}")
        return ShortestEdgeResize(tuple(min_size_train), max_size_train)
    raise InputError(CONFIG_SOURCE, "train.augmentation", f"must be 'lsj' or 'resize_shortest', got {kind!r}")
