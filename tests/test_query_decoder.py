import pytest
import torch
import torch.nn.functional as F

from clipvis.model.query_decoder import QueryDecoder, mask_pool

HIDDEN, QUERIES, HEADS, MASK_DIM = 32, 5, 4, 16


def small_decoder(**kwargs) -> QueryDecoder:
    torch.manual_seed(0)
    options = dict(hidden_dim=HIDDEN, num_queries=QUERIES, heads=HEADS, ffn_dim=64, layers=3, mask_dim=MASK_DIM)
    return QueryDecoder(**{**options, **kwargs})


def features(batch=2, s32=(2, 3), generator_seed=1):
    """[s32, s16, s8] maps and stride-4 mask features for an input of 32·s32."""
    generator = torch.Generator().manual_seed(generator_seed)
    h, w = s32
    levels = [torch.randn(batch, HIDDEN, h * f, w * f, generator=generator) for f in (1, 2, 4)]
    return levels, torch.randn(batch, MASK_DIM, 8 * h, 8 * w, generator=generator)


@pytest.mark.parametrize("layers", [6, 9])
def test_output_shapes_and_auxiliary_sets(layers):
    decoder = small_decoder(layers=layers)
    levels, mask_features = features()
    outputs = decoder(levels, mask_features)  # training mode: with auxiliary sets
    assert outputs["pred_object_logits"].shape == (2, QUERIES, 2)
    assert outputs["pred_ious"].shape == (2, QUERIES, 1)
    assert outputs["pred_masks"].shape == (2, QUERIES, 16, 24)
    assert outputs["pred_embds"].shape == (2, QUERIES, HIDDEN)
    assert len(outputs["aux_outputs"]) == layers
    for aux in outputs["aux_outputs"]:
        assert set(aux) == {"pred_object_logits", "pred_ious", "pred_masks"}
        assert aux["pred_masks"].shape == (2, QUERIES, 16, 24)
    # The first set is read from the learnable queries alone: the same for every image.
    first = outputs["aux_outputs"][0]["pred_object_logits"]
    torch.testing.assert_close(first[0], first[1])

    decoder.eval()
    with torch.no_grad():
        evaluated = decoder(levels, mask_features)
        assert "aux_outputs" not in evaluated
        assert len(decoder(levels, mask_features, with_aux=True)["aux_outputs"]) == layers
    for name in ("pred_object_logits", "pred_ious", "pred_masks", "pred_embds"):
        torch.testing.assert_close(evaluated[name], outputs[name].detach(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("iou_head_input", ["query", "pooled"])
@pytest.mark.parametrize("iou_activation", ["sigmoid", "relu"])
def test_iou_head_options(iou_head_input, iou_activation):
    decoder = small_decoder(iou_head_input=iou_head_input, iou_activation=iou_activation).eval()
    assert decoder.iou_head.layers[0].in_features == (HIDDEN if iou_head_input == "query" else MASK_DIM)
    with torch.no_grad():
        ious = decoder(*features())["pred_ious"]
    if iou_activation == "sigmoid":
        assert ((ious > 0) & (ious < 1)).all()
    else:
        assert (ious >= 0).all()


def test_iou_head_pooled_input_is_the_mask_pooled_feature():
    decoder = small_decoder(iou_head_input="pooled", iou_activation="relu").eval()
    seen = []
    decoder.iou_head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    levels, mask_features = features()
    with torch.no_grad():
        outputs = decoder(levels, mask_features)
    torch.testing.assert_close(seen[-1], mask_pool(mask_features, outputs["pred_masks"]))


def test_mask_pool_by_hand():
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]])  # (1, 2, 2, 2)
    logits = torch.tensor([[[[1.0, -1.0], [2.0, -1.0]], [[-1.0, -1.0], [-1.0, -1.0]]]])  # (1, 2, 2, 2)
    pooled = mask_pool(feats, logits)
    torch.testing.assert_close(pooled, torch.tensor([[[2.0, 20.0], [0.0, 0.0]]]))


def test_attention_mask_blocks_below_half_and_opens_fully_blocked_rows():
    decoder = small_decoder(heads=2)
    mask_embed = torch.tensor([[[1.0], [-1.0]], [[0.0], [-1.0]]])  # (B=2, Q=2, C=1)
    level_features = torch.tensor([[[[1.0, -2.0]]], [[[3.0, 4.0]]]])  # (B=2, C=1, 1, 2)
    blocked = decoder.attention_mask(mask_embed, level_features)
    assert blocked.shape == (4, 2, 2) and blocked.dtype == torch.bool
    expected = torch.tensor([
        [[False, True], [True, False]],  # image 0: logits (1, −2) and (−1, 2)
        # image 1: logits 0 (σ = 0.5, open) and (−3, −4): all blocked, so opened
        [[False, False], [False, False]],
    ])
    torch.testing.assert_close(blocked, expected.repeat_interleave(2, dim=0))  # heads of one image together


def test_attention_mask_equals_resized_full_mask():
    decoder = small_decoder()
    generator = torch.Generator().manual_seed(2)
    mask_embed = torch.randn(2, QUERIES, MASK_DIM, generator=generator)
    mask_features = torch.randn(2, MASK_DIM, 20, 28, generator=generator)
    for size in [(10, 14), (5, 7), (3, 4)]:
        full = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        resized = F.interpolate(full, size=size, mode="bilinear", align_corners=False).flatten(2)
        expected = resized.sigmoid() < 0.5
        expected &= ~expected.all(-1, keepdim=True)
        level_features = F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False)
        blocked = decoder.attention_mask(mask_embed, level_features)[::HEADS]
        near_threshold = resized.abs() < 1e-4
        assert ((blocked == expected) | near_threshold).all()


def constant_mask_decoder() -> QueryDecoder:
    """One layer (it reads the s32 map); every query's mask embedding is the same positive vector."""
    decoder = small_decoder(layers=1).eval()
    with torch.no_grad():
        decoder.mask_embed.layers[-1].weight.zero_()
        decoder.mask_embed.layers[-1].bias.fill_(1.0)
    return decoder


def test_a_query_sees_only_its_mask_and_everything_when_its_mask_is_empty():
    decoder = constant_mask_decoder()
    levels, _ = features(batch=1, s32=(2, 2))
    left_positive = torch.ones(1, MASK_DIM, 16, 16)
    left_positive[..., 8:] = -1.0  # at the 2×2 s32 level: left column inside, right column outside

    def embeddings(s32, mask_features):
        with torch.no_grad():
            return decoder([s32, *levels[1:]], mask_features)["pred_embds"]

    base = embeddings(levels[0], left_positive)
    changed_right, changed_left = levels[0].clone(), levels[0].clone()
    changed_right[..., 1] += 5.0
    changed_left[..., 0] += 5.0
    torch.testing.assert_close(embeddings(changed_right, left_positive), base)
    assert not torch.allclose(embeddings(changed_left, left_positive), base, atol=1e-3)

    # Masks empty everywhere (all blocked) are opened: same as masks covering everything.
    all_open = embeddings(levels[0], torch.ones(1, MASK_DIM, 16, 16))
    torch.testing.assert_close(embeddings(levels[0], -torch.ones(1, MASK_DIM, 16, 16)), all_open)
    assert not torch.allclose(all_open, base, atol=1e-3)


@pytest.mark.parametrize("iou_head_input", ["query", "pooled"])
def test_gradients_reach_every_parameter(iou_head_input):
    decoder = small_decoder(iou_head_input=iou_head_input)
    outputs = decoder(*features())
    total = outputs["pred_embds"].sum()
    for prediction_set in [outputs, *outputs["aux_outputs"]]:
        total = total + sum(prediction_set[k].sum() for k in ("pred_object_logits", "pred_ious", "pred_masks"))
    total.backward()
    for name, parameter in decoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_parameter_names_follow_the_reference_checkpoints():
    names = set(small_decoder().state_dict())
    for expected in [
        "query_feat.weight", "query_embed.weight", "level_embed.weight", "decoder_norm.weight",
        "transformer_cross_attention_layers.2.multihead_attn.in_proj_weight",
        "transformer_cross_attention_layers.0.norm.bias",
        "transformer_self_attention_layers.1.self_attn.out_proj.weight",
        "transformer_ffn_layers.0.linear1.weight", "transformer_ffn_layers.0.linear2.bias",
        "object_embed.layers.2.weight", "mask_embed.layers.0.bias", "iou_head.layers.2.weight",
    ]:
        assert expected in names


def test_transformer_linear_layers_get_xavier_init():
    weight = small_decoder().transformer_ffn_layers[0].linear1.weight  # (64, 32)
    xavier_bound = (6 / (32 + 64)) ** 0.5  # 0.25; PyTorch's default bound would be 1/√32 ≈ 0.18
    assert weight.abs().max() <= xavier_bound and weight.abs().max() > 0.2


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="iou_head_input"):
        small_decoder(iou_head_input="mask")
    with pytest.raises(ValueError, match="iou_activation"):
        small_decoder(iou_activation="tanh")
