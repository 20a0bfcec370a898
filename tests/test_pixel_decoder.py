import math

import pytest
import torch

from clipvis.model.pixel_decoder import PixelDecoder, pixel_centres
from clipvis.model.position_encoding import PositionEmbeddingSine

RN50 = [256, 512, 1024, 2048]
CONVNEXT_B = [128, 256, 512, 1024]


def features_for(in_channels, batch=1, height=64, width=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        f"res{i + 2}": torch.randn(batch, c, height // 2 ** (i + 2), width // 2 ** (i + 2), generator=g)
        for i, c in enumerate(in_channels)
    }


def test_position_encoding_values():
    pe = PositionEmbeddingSine(num_pos_feats=4, normalize=True)
    pos = pe(torch.zeros(2, 7, 4, 3))
    assert pos.shape == (2, 8, 4, 3)
    # Row r (1-based r+1) has angle (r+1)/4·2π; channels 0,1 = sin, cos at wavelength 1, 2,3 at 10000^(2/4).
    y = 2 * math.pi * torch.tensor([1.0, 2.0, 3.0, 4.0]) / 4
    torch.testing.assert_close(pos[1, 0, :, 2], y.sin(), atol=1e-5, rtol=0)
    torch.testing.assert_close(pos[1, 1, :, 0], y.cos(), atol=1e-5, rtol=0)
    torch.testing.assert_close(pos[0, 3, :, 1], (y / 100).cos(), atol=1e-5, rtol=0)
    # Then x: column c has angle (c+1)/3·2π.
    x = 2 * math.pi * torch.tensor([1.0, 2.0, 3.0]) / 3
    torch.testing.assert_close(pos[0, 4, 2, :], x.sin(), atol=1e-5, rtol=0)
    torch.testing.assert_close(pos[0, 6, 0, :], (x / 100).sin(), atol=1e-5, rtol=0)
    torch.testing.assert_close(pe(torch.zeros(1, 1, 4, 3)), pos[:1])  # cached, same values


def test_pixel_centres():
    centres = pixel_centres([(1, 2), (2, 1)], torch.device("cpu"))
    expected = torch.tensor([[0.25, 0.5], [0.75, 0.5], [0.5, 0.25], [0.5, 0.75]])
    torch.testing.assert_close(centres, expected[None])


@pytest.mark.parametrize("in_channels", [RN50, CONVNEXT_B], ids=["rn50", "convnext_b"])
def test_output_shapes(in_channels):
    torch.manual_seed(0)
    decoder = PixelDecoder(in_channels).eval()
    with torch.no_grad():
        mask_features, multi_scale = decoder(features_for(in_channels, batch=2))
    assert mask_features.shape == (2, 256, 16, 24)
    assert [tuple(m.shape) for m in multi_scale] == [(2, 256, 2, 3), (2, 256, 4, 6), (2, 256, 8, 12)]
    assert all(torch.isfinite(t).all() for t in [mask_features, *multi_scale])


def test_init():
    torch.manual_seed(0)
    decoder = PixelDecoder(CONVNEXT_B, conv_dim=64, mask_dim=32, encoder_layers=2, ffn_dim=128)
    for proj in decoder.input_proj:
        assert not proj[0].bias.any()
    assert not decoder.mask_features.bias.any()
    assert decoder.lateral_conv[0].bias is None and decoder.output_conv[0].bias is None
    assert decoder.level_embed.shape == (3, 64)
    assert 0.7 < decoder.level_embed.std() < 1.3  # standard normal
    # The encoder's FFN matrices are xavier-uniform, the deformable attention keeps its own init.
    layer = decoder.encoder[0]
    assert layer.linear1.weight.abs().max() <= math.sqrt(6 / (64 + 128))
    assert not layer.self_attn.sampling_offsets.weight.any()


def test_top_down_path_and_levels():
    """res2 only feeds mask_features; res5 reaches mask_features through the encoder and the upsampling."""
    torch.manual_seed(0)
    decoder = PixelDecoder(RN50, conv_dim=64, mask_dim=32, encoder_layers=1, ffn_dim=128).eval()
    features = features_for(RN50, height=64, width=64)
    with torch.no_grad():
        mask_features, multi_scale = decoder(features)
        changed_res2 = dict(features, res2=features["res2"] + 1)
        mask2, multi2 = decoder(changed_res2)
        changed_res5 = dict(features, res5=features["res5"] * 2)
        mask5, _ = decoder(changed_res5)
    assert all(torch.equal(a, b) for a, b in zip(multi_scale, multi2))
    assert not torch.allclose(mask2, mask_features)
    assert not torch.allclose(mask5, mask_features)


def test_runs_in_float32_under_autocast():
    torch.manual_seed(0)
    decoder = PixelDecoder(CONVNEXT_B, conv_dim=64, mask_dim=32, encoder_layers=1, ffn_dim=128).eval()
    features = {k: v.bfloat16() for k, v in features_for(CONVNEXT_B).items()}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mask_features, multi_scale = decoder(features)
    assert mask_features.dtype == torch.float32
    assert all(m.dtype == torch.float32 for m in multi_scale)


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    decoder = PixelDecoder(RN50, conv_dim=64, mask_dim=32, encoder_layers=2, ffn_dim=128)
    # At init the queries (and so the level embedding) do not yet steer the sampling: nudge them,
    # as one training step would.
    with torch.no_grad():
        for layer in decoder.encoder:
            layer.self_attn.attention_weights.weight.normal_(std=0.01)
            layer.self_attn.sampling_offsets.weight.normal_(std=0.01)
    mask_features, multi_scale = decoder(features_for(RN50, batch=2, height=32, width=64))
    loss = mask_features.square().mean() + sum(m.square().mean() for m in multi_scale)
    loss.backward()
    for name, param in decoder.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
