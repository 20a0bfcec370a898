import copy
import math

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F

from clipvis.errors import InputError
from clipvis.model.clip_encoder import FrozenCLIP, file_sha256


def seeded_clip(name: str, seed: int = 0, pretrained: str | None = None) -> FrozenCLIP:
    torch.manual_seed(seed)
    return FrozenCLIP(name, pretrained)


@pytest.fixture(scope="module")
def toy_rn() -> FrozenCLIP:
    return seeded_clip("clipvis_toy_rn")


@pytest.fixture(scope="module")
def toy_convnext() -> FrozenCLIP:
    return seeded_clip("clipvis_toy_convnext")


@pytest.mark.parametrize("name, family", [("clipvis_toy_rn", "resnet"), ("clipvis_toy_convnext", "convnext")])
def test_feature_shapes_and_strides(name, family):
    clip = seeded_clip(name)
    assert clip.family == family
    features = clip.features(torch.randn(2, 3, 64, 96))
    for key, stride in {"res2": 4, "res3": 8, "res4": 16, "res5": 32, "clip_dense": 32}.items():
        assert features[key].shape == (2, clip.out_channels[key], 64 // stride, 96 // stride), key
        assert clip.strides[key] == stride
    assert torch.equal(features["clip_dense"], features["res5"])  # norm_pre is Identity for ConvNeXt


def test_dense_stride_16_is_the_last_stage_without_its_pools(toy_rn):
    """clip.dense_stride 16: the segmenter's features stay as they are; clip_dense is the last stage run on res4
    with the same weights, its downsampling average pools replaced by nothing (checked against open_clip's own
    blocks with the pools swapped out), on a grid twice as fine that pooling and attention-pool classify on."""
    fine = FrozenCLIP("clipvis_toy_rn", None, dense_stride=16)
    fine.clip.load_state_dict(toy_rn.clip.state_dict())
    images = torch.randn(2, 3, 64, 96)
    coarse, features = toy_rn.features(images), fine.features(images)
    for key in ("res2", "res3", "res4", "res5"):
        assert torch.equal(features[key], coarse[key]), key
    assert features["clip_dense"].shape == (2, fine.out_channels["clip_dense"], 4, 6)
    assert fine.strides["clip_dense"] == 16

    unpooled = copy.deepcopy(toy_rn.clip.visual.layer4)
    for block in unpooled:
        block.avgpool = torch.nn.Identity()
        if block.downsample is not None:
            block.downsample[0] = torch.nn.Identity()
    assert torch.allclose(features["clip_dense"], unpooled(coarse["res4"]), atol=1e-6)

    embeddings, valid = fine.pool_masks(features["clip_dense"], torch.randn(2, 3, 16, 24))
    assert embeddings.shape == (2, 3, fine.embed_dim) and embeddings[valid].isfinite().all()


def test_dense_stride_16_needs_a_resnet_clip():
    with pytest.raises(InputError, match="clip.dense_stride"):
        FrozenCLIP("clipvis_toy_convnext", None, dense_stride=16)


@pytest.mark.parametrize("name, channels, embed_dim", [
    ("RN50", [256, 512, 1024, 2048], 1024),
    ("convnext_base_w_320", [128, 256, 512, 1024], 640),
])
def test_real_architectures(name, channels, embed_dim):
    clip = FrozenCLIP(name, None)
    features = clip.features(torch.randn(1, 3, 32, 64))
    assert [features[f"res{i}"].shape[1] for i in range(2, 6)] == channels
    assert features["res5"].shape[-2:] == (1, 2)
    embeddings, valid = clip.pool_masks(features["clip_dense"], torch.randn(1, 3, 8, 16))
    assert embeddings.shape == (1, 3, embed_dim) and clip.embed_dim == embed_dim


def test_pixel_mean_std_are_clip_statistics_in_0_255(toy_rn):
    assert torch.allclose(toy_rn.pixel_mean.flatten(), torch.tensor([122.7709383, 116.7460125, 104.09373615]))
    assert torch.allclose(toy_rn.pixel_std.flatten(), torch.tensor([68.5005327, 66.6321579, 70.32316305]))


def test_clip_is_frozen_and_stays_in_eval_mode():
    clip = seeded_clip("clipvis_toy_rn")
    assert not any(p.requires_grad for p in clip.parameters())
    clip.train()
    assert clip.training and not any(m.training for m in clip.clip.modules())
    bn = clip.clip.visual.bn1
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    clip(torch.randn(2, 3, 64, 64) * 5 + 3)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]


def test_inference_layout_runs_a_resnet_trunk_channels_last_with_the_same_features():
    """`use_channels_last` (what inference switches on): kernels, inputs and features channels-last, the same
    values to float rounding; a ConvNeXt trunk (no faster so) is left as it is."""
    clip = seeded_clip("clipvis_toy_rn")
    images = torch.randn(2, 3, 64, 96)
    reference = clip.features(images)
    clip.use_channels_last()
    assert clip.channels_last and clip.clip.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    features = clip.features(images)
    assert features.keys() == reference.keys()
    for key, value in reference.items():
        assert features[key].is_contiguous(memory_format=torch.channels_last), key
        torch.testing.assert_close(features[key], value, atol=1e-5, rtol=1e-4)
    convnext = seeded_clip("clipvis_toy_convnext")
    convnext.use_channels_last()
    assert not convnext.channels_last
    assert convnext.clip.visual.trunk.stem[0].weight.is_contiguous()


def test_convnext_pooling_is_masked_average_through_head(toy_convnext):
    channels = toy_convnext.out_channels["clip_dense"]
    dense = torch.randn(1, channels, 2, 2)
    # Logits at twice the resolution, constant on 2x2 blocks: bilinear resizing keeps each block's sign.
    block_signs = torch.tensor([[[1.0, -1.0], [1.0, 1.0]],  # top-left, bottom-left, bottom-right
                                [[-1.0, -1.0], [-1.0, 1.0]],  # bottom-right only
                                [[-1.0, -1.0], [-1.0, -1.0]]])  # empty
    mask_logits = block_signs.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[None]  # (1, 3, 4, 4)
    embeddings, valid = toy_convnext.pool_masks(dense, mask_logits)

    norm = toy_convnext.clip.visual.trunk.head.norm
    projection = toy_convnext.clip.visual.head.proj.weight  # (D, C), no bias

    def by_hand(vector):
        normalised = (vector - vector.mean()) / torch.sqrt(vector.var(unbiased=False) + norm.eps)
        return (normalised * norm.weight + norm.bias) @ projection.T

    first = (dense[0, :, 0, 0] + dense[0, :, 1, 0] + dense[0, :, 1, 1]) / 3
    assert torch.allclose(embeddings[0, 0], by_hand(first), atol=1e-4)
    assert torch.allclose(embeddings[0, 1], by_hand(dense[0, :, 1, 1]), atol=1e-4)
    # An empty mask pools a zero vector: LayerNorm gives its bias, a constant embedding.
    assert torch.allclose(embeddings[0, 2], norm.bias @ projection.T, atol=1e-5)
    assert valid.all()


def slow_masked_attention_pool(clip: FrozenCLIP, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """One query and one head at a time, with the explicit softmax-attention formula."""
    pool = clip.clip.visual.attnpool
    batch, channels, height, width = dense.shape
    heads = pool.num_heads
    d = channels // heads
    grid = math.isqrt(pool.positional_embedding.shape[0] - 1)
    spatial = pool.positional_embedding[1:].T.reshape(1, channels, grid, grid)
    spatial = F.interpolate(spatial, size=(height, width), mode="bilinear", align_corners=False)[0]
    out = torch.zeros(batch, masks.shape[1], pool.c_proj.out_features)
    for b in range(batch):
        positions = [(y, x) for y in range(height) for x in range(width)]
        kv = torch.stack([dense[b, :, y, x] + spatial[:, y, x] for y, x in positions])  # (hw, C)
        query = dense[b].mean(dim=(1, 2)) + pool.positional_embedding[0]
        q = pool.q_proj.weight @ query + pool.q_proj.bias
        k = kv @ pool.k_proj.weight.T + pool.k_proj.bias
        v = kv @ pool.v_proj.weight.T + pool.v_proj.bias
        for m in range(masks.shape[1]):
            allowed = [i for i, (y, x) in enumerate(positions) if masks[b, m, y, x]]
            if not allowed:
                continue
            head_outputs = []
            for h in range(heads):
                part = slice(h * d, (h + 1) * d)
                scores = torch.stack([q[part] @ k[i, part] / math.sqrt(d) for i in allowed])
                weights = torch.exp(scores - scores.max())
                weights = weights / weights.sum()
                head_outputs.append(sum(w * v[i, part] for w, i in zip(weights, allowed)))
            out[b, m] = pool.c_proj.weight @ torch.cat(head_outputs) + pool.c_proj.bias
    return out


def test_resnet_masked_attention_pooling_matches_slow_formula(toy_rn):
    torch.manual_seed(1)
    channels = toy_rn.out_channels["clip_dense"]
    dense = torch.randn(2, channels, 3, 4)
    mask_logits = torch.randn(2, 4, 3, 4)
    mask_logits[0, 0] = 1.0  # full mask
    mask_logits[1, 2] = -1.0  # empty mask
    mask_logits[1, 3] = -1.0
    mask_logits[1, 3, 2, 1] = 1.0  # a single position
    embeddings, valid = toy_rn.pool_masks(dense, mask_logits)

    expected_valid = torch.tensor([[True] * 4, [True, True, False, True]])
    assert torch.equal(valid, expected_valid)
    assert torch.equal(embeddings[1, 2], torch.zeros(toy_rn.embed_dim))
    expected = slow_masked_attention_pool(toy_rn, dense, mask_logits > 0)
    assert torch.allclose(embeddings[valid], expected[valid], atol=1e-4)


def test_checkpoint_file_loads_bit_identical(tmp_path):
    original = seeded_clip("clipvis_toy_rn", seed=3)
    path = tmp_path / "toy_clip.pt"
    torch.save(original.clip.state_dict(), path)
    loaded = seeded_clip("clipvis_toy_rn", seed=4, pretrained=str(path))
    assert loaded.weights_id == f"sha256:{file_sha256(path)}"

    images = torch.randn(1, 3, 64, 64)
    expected, actual = original.features(images), loaded.features(images)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key
    tokens = original.tokenizer(["a photo of a cat."])
    assert torch.equal(loaded.encode_text(tokens), original.encode_text(tokens))


def test_random_weights_are_the_same_in_every_process_and_leave_the_global_generator_alone():
    torch.manual_seed(1)
    first = FrozenCLIP("clipvis_toy_rn")
    after = torch.rand(3)
    torch.manual_seed(1)
    torch.rand(5)  # another global state: the random CLIP is still the same
    second = FrozenCLIP("clipvis_toy_rn")
    assert all(torch.equal(a, b) for a, b in zip(first.clip.state_dict().values(), second.clip.state_dict().values()))
    torch.manual_seed(1)
    FrozenCLIP("clipvis_toy_rn")
    assert torch.equal(torch.rand(3), after)


def test_checkpoint_of_another_model_is_input_error(tmp_path):
    path = tmp_path / "convnext.pt"
    torch.save(seeded_clip("clipvis_toy_convnext").clip.state_dict(), path)
    with pytest.raises(InputError, match="not a loadable checkpoint of clipvis_toy_rn"):
        FrozenCLIP("clipvis_toy_rn", str(path))


def test_unknown_tag_is_input_error():
    with pytest.raises(InputError, match="neither an open_clip tag of clipvis_toy_rn"):
        FrozenCLIP("clipvis_toy_rn", "no_such_tag")


def test_missing_weights_offline_is_one_line_input_error(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError) as error:
        FrozenCLIP("RN50", "openai", cache_dir=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert "RN50/openai" in message and "open_clip_pytorch_model.bin" in message
    assert str(tmp_path) in message and "--set clip.pretrained=" in message
