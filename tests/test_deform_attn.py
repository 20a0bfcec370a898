import math

import pytest
import torch
import torch.nn.functional as F

from clipvis.model.deform_attn import MSDeformAttn, grid_sampled_core, ms_deform_attn_core


def slow_core(value, sizes, locations, weights):
    """Direct definition, one sample and one corner at a time (float64)."""
    n_img, _, heads, head_dim = value.shape
    _, lq, _, levels, points, _ = locations.shape
    value, locations, weights = value.double(), locations.double(), weights.double()
    out = torch.zeros(n_img, lq, heads, head_dim, dtype=torch.float64)
    start = 0
    for level in range(levels):
        height, width = sizes[level]
        for n in range(n_img):
            for q in range(lq):
                for h in range(heads):
                    for p in range(points):
                        px = float(locations[n, q, h, level, p, 0]) * width - 0.5
                        py = float(locations[n, q, h, level, p, 1]) * height - 0.5
                        x0, y0 = math.floor(px), math.floor(py)
                        for cx in (x0, x0 + 1):
                            for cy in (y0, y0 + 1):
                                if 0 <= cx < width and 0 <= cy < height:
                                    bilinear = (1 - abs(px - cx)) * (1 - abs(py - cy))
                                    row = value[n, start + cy * width + cx, h]
                                    out[n, q, h] += weights[n, q, h, level, p] * bilinear * row
        start += height * width
    return out.view(n_img, lq, heads * head_dim)


def random_inputs(generator, n_img, lq, heads, head_dim, shapes, points, spread=0.3, dtype=torch.float32):
    s = sum(h * w for h, w in shapes)
    levels = len(shapes)
    value = torch.randn(n_img, s, heads, head_dim, generator=generator, dtype=dtype)
    # Locations from -spread to 1 + spread: many corners and whole points fall outside the maps.
    locations = torch.rand(n_img, lq, heads, levels, points, 2, generator=generator, dtype=dtype)
    locations = locations * (1 + 2 * spread) - spread
    weights = torch.rand(n_img, lq, heads, levels, points, generator=generator, dtype=dtype)
    return value, shapes, locations, weights


def test_core_matches_direct_definition_including_outside_and_border_points():
    g = torch.Generator().manual_seed(0)
    value, shapes, locations, weights = random_inputs(g, 2, 6, 2, 3, [(3, 4), (2, 5), (1, 1)], 3)
    # Exact borders and pixel centres of level 0 (H=3, W=4), and points far outside.
    special = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.125, 1 / 6], [0.25, 2 / 3], [1.0, 0.5], [-1.5, 2.0]])
    locations[0, :, 0, 0, 0] = special
    locations[1, :, 1, 2, 2] = special
    expected = slow_core(value, shapes, locations, weights)
    for core in (ms_deform_attn_core, grid_sampled_core):  # the gather (no gradients) and grid_sample
        got = core(value, shapes, locations, weights)
        assert got.shape == (2, 6, 6)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_point_on_a_pixel_centre_reads_that_pixel():
    value = torch.arange(12, dtype=torch.float32).view(1, 12, 1, 1)  # one 3x4 map, value = row-major index
    shapes = [(3, 4)]
    # Centre of pixel (x=2, y=1): ((2 + 0.5) / 4, (1 + 0.5) / 3); half a pixel right of it; outside corner.
    locations = torch.tensor([[2.5 / 4, 1.5 / 3], [3.0 / 4, 1.5 / 3], [1.0, 1.0]]).view(1, 3, 1, 1, 1, 2)
    weights = torch.ones(1, 3, 1, 1, 1)
    out = ms_deform_attn_core(value, shapes, locations, weights).view(3)
    # Pixel 6; halfway between pixels 6 and 7; the bottom-right map corner sees a quarter of pixel 11.
    torch.testing.assert_close(out, torch.tensor([6.0, 6.5, 11 / 4]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_core_matches_grid_sample_on_random_shapes(seed):
    g = torch.Generator().manual_seed(seed)
    shapes = [tuple(int(v) for v in torch.randint(1, 13, (2,), generator=g)) for _ in range(1 + seed)]
    value, shapes, locations, weights = random_inputs(g, 2, 40, 3, 8, shapes, 4, spread=0.5)
    expected = grid_sampled_core(value, shapes, locations, weights)
    torch.testing.assert_close(ms_deform_attn_core(value, shapes, locations, weights), expected, atol=1e-5, rtol=1e-5)


def autograd_nodes(output) -> set[str]:
    """The names of the nodes of the autograd graph that made `output`."""
    names, seen, stack = set(), set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            names.add(node.name())
            stack += [parent for parent, _ in node.next_functions]
    return names


def test_core_uses_grid_sample_when_autograd_records_and_gives_the_same_output():
    g = torch.Generator().manual_seed(5)
    value, shapes, locations, weights = random_inputs(g, 2, 30, 2, 4, [(5, 6), (3, 3)], 2, spread=0.5)
    gathered = ms_deform_attn_core(value, shapes, locations, weights)
    assert gathered.grad_fn is None
    recorded = ms_deform_attn_core(value.requires_grad_(), shapes, locations, weights)
    assert "GridSampler2DBackward0" in autograd_nodes(recorded)
    torch.testing.assert_close(recorded.detach(), gathered, atol=1e-5, rtol=1e-5)


def test_core_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(4)
    inputs = random_inputs(g, 1, 3, 2, 2, [(3, 2), (2, 3)], 2, spread=0.2, dtype=torch.float64)
    value, shapes, locations, weights = inputs
    value.requires_grad_()
    locations.requires_grad_()
    weights.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn_core(v, shapes, loc, w), (value, locations, weights), atol=1e-6
    )


def test_msdeformattn_init():
    attn = MSDeformAttn(d_model=32, levels=3, heads=8, points=4)
    assert attn.sampling_offsets.weight.shape == (8 * 3 * 4 * 2, 32)
    assert attn.attention_weights.weight.shape == (8 * 3 * 4, 32)
    assert not attn.sampling_offsets.weight.any()
    assert not attn.attention_weights.weight.any() and not attn.attention_weights.bias.any()
    assert not attn.value_proj.bias.any() and not attn.output_proj.bias.any()
    # Head k points along 45°·k, pushed onto the unit square; point i is i+1 times that; every level alike.
    directions = torch.tensor([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1], [1, -1]])
    expected = directions.view(8, 1, 1, 2) * torch.arange(1, 5).view(1, 1, 4, 1)
    bias = attn.sampling_offsets.bias.view(8, 3, 4, 2)
    torch.testing.assert_close(bias, expected.expand(8, 3, 4, 2).float(), atol=1e-6, rtol=0)
    # Xavier-uniform bound for a square 32x32 matrix.
    assert attn.value_proj.weight.abs().max() <= math.sqrt(6 / 64)
    assert attn.value_proj.weight.std() > 0.1


def test_msdeformattn_offsets_are_in_pixels_of_each_level():
    """Identity projections, every point one pixel to the right: each query reads its right-hand
    neighbour on every level (zero past the right edge), averaged over levels by uniform attention."""
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=2, levels=2, heads=1, points=1)
    with torch.no_grad():
        for proj in (attn.value_proj, attn.output_proj):
            proj.weight.copy_(torch.eye(2))
        attn.sampling_offsets.bias.copy_(torch.tensor([1.0, 0.0, 1.0, 0.0]))
    shapes = [(2, 3), (1, 2)]
    value = torch.randn(1, 8, 2)
    # The query sits at the centre of pixel (x=0, y=1) of level 0 (2x3).
    reference = torch.tensor([[[0.5 / 3, 1.5 / 2]]])
    out = attn(torch.randn(1, 1, 2), reference, value, shapes).view(2)
    level0_right = value[0, 1 * 3 + 1]  # pixel (x=1, y=1), exactly
    # Level 1 (1x2) at pixel coordinates x = (0.5/3 + 1/2)·2 - 0.5 = 5/6, y = 0.75·1 - 0.5 = 0.25:
    # 1/6 of pixel 0 and 5/6 of pixel 1 on row 0 (weight 0.75); row 1 is outside the map.
    level1 = 0.75 * (value[0, 6] / 6 + value[0, 7] * 5 / 6)
    torch.testing.assert_close(out, (level0_right + level1) / 2, atol=1e-6, rtol=1e-5)


def test_nan_location_gives_nan_not_an_index_error():
    value = torch.randn(1, 12, 1, 2)
    locations = torch.tensor([[float("nan"), 0.5], [0.5, 0.5]]).view(1, 2, 1, 1, 1, 2)
    out = ms_deform_attn_core(value, [(3, 4)], locations, torch.ones(1, 2, 1, 1, 1))
    assert out[0, 0].isnan().all() and out[0, 1].isfinite().all()


def test_msdeformattn_matches_the_textbook_formula():
    """Sampling location = reference + offset / (W_l, H_l), weights = softmax over levels·points."""
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, levels=2, heads=2, points=3)
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(std=0.5)
        attn.attention_weights.weight.normal_(std=0.5)
    shapes = [(4, 5), (2, 3)]
    query, value_input = torch.randn(2, 7, 16), torch.randn(2, 26, 16)
    reference = torch.rand(2, 7, 2)
    offsets = attn.sampling_offsets(query).view(2, 7, 2, 2, 3, 2)
    locations = reference[:, :, None, None, None, :] + offsets / torch.tensor(shapes).flip(-1)[:, None, :]
    weights = attn.attention_weights(query).view(2, 7, 2, 6).softmax(-1).view(2, 7, 2, 2, 3)
    value = attn.value_proj(value_input).view(2, 26, 2, 8)
    expected = attn.output_proj(grid_sampled_core(value, shapes, locations, weights))
    torch.testing.assert_close(attn(query, reference, value_input, shapes), expected, atol=1e-5, rtol=1e-5)
