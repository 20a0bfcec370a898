import math

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import clipvis.training.criterion as criterion_module
from clipvis.training.criterion import (
    SetCriterion,
    dice_loss,
    iou_l1_loss,
    point_mask_iou,
    sigmoid_bce_loss,
    total_instances,
)
from clipvis.training.matcher import HungarianMatcher
from clipvis.training.point_sampling import point_sample, uncertain_point_coords

LN3 = math.log(3.0)


def test_point_sample_is_bilinear_with_zero_padding():
    maps = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    coords = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5], [0.5, 0.25], [0.0, 0.0]]])
    values = point_sample(maps, coords)
    assert values.shape == (1, 1, 6)
    # Pixel centres, the centre of the map, halfway along the top row, the corner (a quarter of pixel 0).
    torch.testing.assert_close(values[0, 0], torch.tensor([1.0, 2.0, 3.0, 2.5, 1.5, 0.25]))


def test_uncertain_points_prefer_uncertain_pixels():
    logits = torch.full((2, 8, 8), -10.0)
    logits[:, :, 4:] = 0.0  # right half: maximally uncertain
    coords = uncertain_point_coords(logits, 100, 3.0, 0.75, generator=torch.Generator().manual_seed(0))
    assert coords.shape == (2, 100, 2)
    assert ((coords >= 0) & (coords <= 1)).all()
    assert (coords[:, :75, 0] > 0.5).all()  # the 75 importance points lie in the uncertain half
    assert (coords[:, 75:, 0] < 0.5).any()  # the 25 uniform points don't


def test_sigmoid_bce_loss_by_hand():
    logits = torch.tensor([[0.0, LN3], [LN3, LN3]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # mean over points: (ln2 + ln4) / 2 and −ln(0.75); summed, divided by num_masks = 4
    expected = ((math.log(2) + math.log(4)) / 2 - math.log(0.75)) / 4
    assert sigmoid_bce_loss(logits, labels, 4.0).item() == pytest.approx(expected)


def test_dice_loss_by_hand():
    logits = torch.tensor([[LN3, -LN3], [0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # 1 − (2·0.75 + 1)/(1 + 1 + 1) = 1/6 and 1 − (2·1 + 1)/(1 + 2 + 1) = 1/4
    assert dice_loss(logits, labels, 1.0).item() == pytest.approx(1 / 6 + 1 / 4)


def test_point_mask_iou_binarises_the_prediction_only():
    logits = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0], [3.0, 3.0, -3.0, -3.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0]])
    iou = point_mask_iou(logits, labels)
    assert iou[0].item() == pytest.approx(1 / 3)
    assert math.isnan(iou[1].item())  # empty union
    assert iou[2].item() == pytest.approx(1.5 / 2)  # soft labels count as they are


def test_iou_loss_ignores_pairs_with_target_zero_or_nan():
    pred = torch.tensor([0.5, 0.2, 0.9, 0.3], requires_grad=True)
    target = torch.tensor([0.7, 0.0, math.nan, 0.4])
    loss = iou_l1_loss(pred, target)
    assert loss.item() == pytest.approx((0.2 + 0.1) / 2)
    loss.backward()
    torch.testing.assert_close(pred.grad, torch.tensor([-0.5, 0.0, 0.0, -0.5]))

    none_counted = iou_l1_loss(pred, torch.tensor([0.0, 0.0, math.nan, 0.0]))
    assert none_counted.item() == 0.0 and none_counted.requires_grad


# A case where every point is fixed: 2×2 stride-4 masks, 4×4 targets, points at the 4 prediction pixel centres.
PIXEL_CENTRES = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])


def fixed_case():
    """Targets: left half, top-left quadrant. Query 2 predicts the first, query 0 the second, query 1 nothing."""
    targets = torch.zeros(2, 4, 4, dtype=torch.bool)
    targets[0, :, :2] = True
    targets[1, :2, :2] = True
    pred_masks = torch.empty(1, 3, 2, 2)
    pred_masks[0, 0] = torch.tensor([[LN3, LN3], [-LN3, -LN3]])
    pred_masks[0, 1] = -10.0
    pred_masks[0, 2] = torch.tensor([[LN3, -LN3], [LN3, -LN3]])
    outputs = {
        "pred_object_logits": torch.tensor([[[2.0, 0.0], [0.0, 1.0], [2.0, 0.0]]]),
        "pred_ious": torch.tensor([[[0.5], [0.9], [0.6]]]),
        "pred_masks": pred_masks,
    }
    return outputs, [{"masks": targets}]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def expected_fixed_losses():
    bce_75 = -math.log(0.75)
    return {
        # matched queries 0 and 2 (weight 1), unmatched query 1 (weight 0.4); weighted mean
        "loss_object_ce": (2 * softplus(-2.0) + 0.4 * softplus(-1.0)) / 2.4,
        # query 2 vs left half: every point −ln 0.75; query 0 vs top-left: three −ln 0.75 and one ln 4
        "loss_mask": (bce_75 + (3 * bce_75 + math.log(4)) / 4) / 2,
        "loss_dice": ((1 - 4 / 5) + (1 - 2.5 / 4)) / 2,
        # IoU targets 1 (query 2, predicted 0.6) and 1/2 (query 0, predicted 0.5)
        "loss_iou": (0.4 + 0.0) / 2,
    }


@pytest.fixture
def fixed_points(monkeypatch):
    def centres(logits, *args, **kwargs):
        return PIXEL_CENTRES.expand(len(logits), -1, -1)

    monkeypatch.setattr(criterion_module, "uncertain_point_coords", centres)


def test_losses_by_hand_with_fixed_points(fixed_points):
    outputs, targets = fixed_case()
    criterion = SetCriterion(HungarianMatcher(num_points=500), deep_supervision=False)
    losses = criterion(outputs, targets, generator=torch.Generator().manual_seed(0))
    expected = expected_fixed_losses()
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name

    total = criterion.total_loss(losses)
    weights = {"loss_object_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0, "loss_iou": 2.0}
    assert total.item() == pytest.approx(sum(weights[k] * v for k, v in expected.items()), rel=1e-5)


def test_no_object_weight_is_used(fixed_points):
    outputs, targets = fixed_case()
    criterion = SetCriterion(HungarianMatcher(num_points=500), no_object_weight=1.0, deep_supervision=False)
    loss = criterion(outputs, targets)["loss_object_ce"]
    assert loss.item() == pytest.approx((2 * softplus(-2.0) + softplus(-1.0)) / 3)


def test_deep_supervision_keys_and_weights(fixed_points):
    outputs, targets = fixed_case()
    outputs["aux_outputs"] = [{k: v.clone() for k, v in outputs.items()} for _ in range(2)]
    criterion = SetCriterion(HungarianMatcher(num_points=500), num_aux_outputs=2)
    losses = criterion(outputs, targets)
    names = ["loss_object_ce", "loss_mask", "loss_dice", "loss_iou"]
    assert set(losses) == {f"{n}{s}" for n in names for s in ("", "_0", "_1")}
    assert set(criterion.weight_dict) == set(losses)
    assert criterion.weight_dict["loss_dice_1"] == 5.0 and criterion.weight_dict["loss_iou_0"] == 2.0
    for name, value in expected_fixed_losses().items():
        assert losses[name + "_1"].item() == pytest.approx(value, rel=1e-5)

    with pytest.raises(ValueError, match="auxiliary"):
        SetCriterion(HungarianMatcher(num_points=500), num_aux_outputs=3)(outputs, targets)


def test_gradients_reach_predictions_but_not_through_the_iou_target():
    generator = torch.Generator().manual_seed(0)
    outputs = {
        "pred_object_logits": torch.randn(2, 4, 2, generator=generator).requires_grad_(),
        "pred_ious": torch.rand(2, 4, 1, generator=generator).requires_grad_(),
        "pred_masks": torch.randn(2, 4, 8, 8, generator=generator).requires_grad_(),
    }
    targets = [{"masks": torch.rand(2, 32, 32, generator=generator) > 0.5}, {"masks": torch.zeros(0, 32, 32)}]
    criterion = SetCriterion(HungarianMatcher(num_points=64), num_points=64, deep_supervision=False)
    losses = criterion(outputs, targets, generator=generator)
    assert all(torch.isfinite(v) for v in losses.values())

    losses["loss_iou"].backward(retain_graph=True)
    assert outputs["pred_masks"].grad is None or not outputs["pred_masks"].grad.any()
    assert outputs["pred_ious"].grad.any()
    criterion.total_loss(losses).backward()
    assert outputs["pred_masks"].grad.any() and outputs["pred_object_logits"].grad.any()


def test_num_masks_is_averaged_over_ranks_and_at_least_one(tmp_path):
    targets = [{"masks": torch.zeros(3, 4, 4)}, {"masks": torch.zeros(2, 4, 4)}]
    assert total_instances(targets, torch.device("cpu")) == 5.0
    assert total_instances([{"masks": torch.zeros(0, 4, 4)}], torch.device("cpu")) == 1.0
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert total_instances(targets, torch.device("cpu")) == 5.0
    finally:
        dist.destroy_process_group()


def test_object_loss_matches_weighted_cross_entropy_on_random_input():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 2, generator=generator)
    outputs = {"pred_object_logits": logits, "pred_ious": torch.rand(2, 5, 1), "pred_masks": torch.zeros(2, 5, 4, 4)}
    targets = [{"masks": torch.ones(1, 16, 16)}, {"masks": torch.ones(2, 16, 16)}]
    indices = [(torch.tensor([3]), torch.tensor([0])), (torch.tensor([0, 4]), torch.tensor([1, 0]))]
    criterion = SetCriterion(HungarianMatcher(), num_points=16, deep_supervision=False)
    loss = criterion.set_losses(outputs, targets, indices, num_masks=3.0)["loss_object_ce"]

    labels = torch.ones(2, 5, dtype=torch.int64)
    labels[0, 3] = labels[1, 0] = labels[1, 4] = 0
    per_query = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1), reduction="none")
    weights = torch.where(labels.reshape(-1) == 0, 1.0, 0.4)
    assert loss.item() == pytest.approx(((weights * per_query).sum() / weights.sum()).item(), rel=1e-6)
