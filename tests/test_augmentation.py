import numpy as np
import pytest
import torch

from clipvis.data.augmentation import (PAD_VALUE, LargeScaleJitter, ShortestEdgeResize, build_augmentation,
                                       scaled_size, shortest_edge_size)
from clipvis.errors import InputError


class FixedDraws:
    """Stands in for np.random.Generator: `random()` returns the given values in turn."""

    def __init__(self, *values: float):
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def integers(self, high: int) -> int:
        return int(self.random() * high)


def square_scene(height=60, width=80, top=10, left=50, side=20):
    """A grey image with a red square, and the square's mask (1, H, W)."""
    image = torch.full((3, height, width), 90, dtype=torch.uint8)
    image[:, top:top + side, left:left + side] = torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None]
    masks = torch.zeros((1, height, width), dtype=torch.bool)
    masks[0, top:top + side, left:left + side] = True
    return image, masks


def square_pixels(image):
    """Pixels at least half covered by the red square: green is 90 on the background, 0 on the square
    and 128 on padding."""
    return image[1] <= 45


def test_output_sizes_are_hand_computed():
    assert scaled_size(100, 50, 64, 1.0) == (64, 32)
    assert scaled_size(60, 80, 100, 0.5) == (38, 50)  # factor min(50/60, 50/80) = 0.625; 37.5 rounds to even
    assert shortest_edge_size(480, 640, 200, 350) == (200, 267)
    assert shortest_edge_size(480, 640, 300, 350) == (263, 350)  # 300x400 capped: 262.5 -> 263
    assert shortest_edge_size(640, 480, 300, 1000) == (400, 300)


def test_lsj_with_fixed_draws_flips_scales_and_pads():
    image, masks = square_scene()  # square at rows 10..29, columns 50..69 of 60x80
    # flip (0.1 < 0.5), scale 0.5 + 1.5 * 0 = 0.5 -> factor 0.625 of 100: 38x50, padded to 100x100
    out_image, out_masks = LargeScaleJitter(100, 0.5, 2.0)(image, masks, FixedDraws(0.1, 0.0, 0.7))
    assert out_image.shape == (3, 100, 100) and out_masks.shape == (1, 100, 100)
    assert (out_image[:, 38:, :] == PAD_VALUE).all() and (out_image[:, :, 50:] == PAD_VALUE).all()
    assert not out_masks[:, 38:, :].any() and not out_masks[:, :, 50:].any()
    # flipped square: columns 10..29 -> 6.25..18.75; rows 10..29 -> 6.25..18.75
    rows, columns = torch.nonzero(out_masks[0], as_tuple=True)
    assert (rows.min(), rows.max(), columns.min(), columns.max()) == (6, 18, 6, 18)
    assert (square_pixels(out_image) ^ out_masks[0]).sum() <= 2  # rounding at the corners at most


def test_lsj_crop_window_moves_along_both_axes_with_one_draw():
    image, masks = square_scene()
    # no flip; scale 2.0: factor min(80/60, 80/80) = 1 -> 60x80; window 40x40 with position 1.0 -> (20, 40)
    out_image, out_masks = LargeScaleJitter(40, 2.0, 2.0)(image, masks, FixedDraws(0.9, 0.0, 1.0))
    assert torch.equal(out_image, image[:, 20:60, 40:80])
    assert torch.equal(out_masks, masks[:, 20:60, 40:80])


@pytest.mark.parametrize("seed", range(8))
def test_lsj_is_square_and_masks_follow_the_image(seed):
    image, masks = square_scene()
    out_image, out_masks = LargeScaleJitter(64, 0.1, 2.0)(image, masks, np.random.default_rng(seed))
    assert out_image.shape == (3, 64, 64) and out_image.dtype == torch.uint8
    assert out_masks.shape == (1, 64, 64) and out_masks.dtype == torch.bool
    disagree = square_pixels(out_image) ^ out_masks[0]
    assert disagree.sum() <= 2  # rounding ties at the edge at most


def test_same_generator_seed_gives_identical_output():
    image, masks = square_scene()
    jitter = LargeScaleJitter(64, 0.1, 2.0)
    first = jitter(image, masks, np.random.default_rng(5))
    second = jitter(image, masks, np.random.default_rng(5))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_shortest_edge_resize_sizes_and_flip():
    image, masks = square_scene(height=60, width=80)
    resize = ShortestEdgeResize((30, 45), 50)
    shapes = set()
    for seed in range(20):
        out_image, out_masks = resize(image, masks, np.random.default_rng(seed))
        assert out_masks.shape[-2:] == out_image.shape[-2:]
        shapes.add(tuple(out_image.shape[-2:]))
    assert shapes == {(30, 40), (38, 50)}  # short side 45 -> 45x60, long side capped at 50: 37.5 -> 38
    # size choice 30 (draw 0.2 of 2 choices), flip (0.3 < 0.5): square columns 50..69 -> 10..29 -> 5..14
    _, out_masks = resize(image, masks, FixedDraws(0.2, 0.3))
    columns = torch.nonzero(out_masks[0].any(0)).flatten()
    assert (columns.min(), columns.max()) == (5, 14)


def test_empty_masks_pass_through():
    image, _ = square_scene()
    out_image, out_masks = LargeScaleJitter(32, 0.5, 1.5)(image, torch.zeros((0, 60, 80), dtype=torch.bool),
                                                          np.random.default_rng(0))
    assert out_image.shape == (3, 32, 32) and out_masks.shape == (0, 32, 32)


def test_build_augmentation_checks_config_values():
    assert build_augmentation("lsj", 64, [0.1, 2.0], [800], 1333) == LargeScaleJitter(64, 0.1, 2.0)
    assert build_augmentation("resize_shortest", 64, [0.1, 2.0], [96, 128], 200) == ShortestEdgeResize((96, 128), 200)
    with pytest.raises(InputError, match="train.lsj_scale"):
        build_augmentation("lsj", 64, [2.0, 0.1], [800], 1333)
    with pytest.raises(InputError, match="train.min_size_train"):
        build_augmentation("resize_shortest", 64, [0.1, 2.0], [], 1333)
