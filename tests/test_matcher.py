import itertools
import math

import pytest
import torch

from clipvis.training.matcher import HungarianMatcher, assign, pairwise_dice, pairwise_sigmoid_bce

LN3 = math.log(3.0)
# Two predictions read at two points: σ = (0.5, 0.5) and (0.75, 0.25).
PRED_POINTS = torch.tensor([[0.0, 0.0], [LN3, -LN3]], dtype=torch.float64)
TARGET_POINTS = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)


def test_pairwise_bce_by_hand():
    ln2, bce_75 = math.log(2.0), -math.log(0.75)
    expected = torch.tensor([
        [ln2, ln2],
        [bce_75, (bce_75 - math.log(0.25)) / 2],
    ], dtype=torch.float64)
    torch.testing.assert_close(pairwise_sigmoid_bce(PRED_POINTS, TARGET_POINTS), expected)


def test_pairwise_dice_by_hand():
    # 1 − (2·Σσt + 1) / (Σσ + Σt + 1)
    expected = torch.tensor([
        [1 - 2 / 3, 1 - 3 / 4],
        [1 - 2.5 / 3, 1 - 3 / 4],
    ], dtype=torch.float64)
    torch.testing.assert_close(pairwise_dice(PRED_POINTS, TARGET_POINTS), expected)


def test_point_cost_weights_and_object_term():
    matcher = HungarianMatcher(cost_mask=5.0, cost_dice=5.0, cost_object=2.0)
    object_prob = torch.tensor([0.8, 0.3], dtype=torch.float64)
    cost = matcher.point_cost(object_prob, PRED_POINTS, TARGET_POINTS)
    expected = (
        5 * pairwise_sigmoid_bce(PRED_POINTS, TARGET_POINTS)
        + 5 * pairwise_dice(PRED_POINTS, TARGET_POINTS)
        - 2 * object_prob[:, None]
    )
    torch.testing.assert_close(cost, expected)
    assert cost[0, 0].item() == pytest.approx(5 * math.log(2) + 5 / 3 - 1.6)


def brute_force_minimum(cost: torch.Tensor) -> float:
    queries, targets = cost.shape
    return min(
        sum(cost[q, t].item() for q, t in zip(chosen, range(targets)))
        for chosen in itertools.permutations(range(queries), targets)
    )


@pytest.mark.parametrize("shape", [(3, 3), (4, 3), (5, 2)])
def test_assignment_is_optimal(shape):
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        cost = torch.rand(shape, generator=generator)
        pred_idx, tgt_idx = assign(cost)
        assert pred_idx.dtype == tgt_idx.dtype == torch.int64
        assert len(pred_idx) == shape[1] and len(set(pred_idx.tolist())) == shape[1]
        assert sorted(tgt_idx.tolist()) == list(range(shape[1]))
        assert cost[pred_idx, tgt_idx].sum().item() == pytest.approx(brute_force_minimum(cost))


def test_assignment_with_more_targets_than_queries_or_none():
    pred_idx, tgt_idx = assign(torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.5, 9.0]]))
    assert pred_idx.tolist() == [0, 1] and tgt_idx.tolist() == [0, 1]
    pred_idx, tgt_idx = assign(torch.zeros(4, 0))
    assert len(pred_idx) == len(tgt_idx) == 0


def test_non_finite_costs_are_avoided_or_taken():
    pred_idx, tgt_idx = assign(torch.tensor([[math.inf, 1.0], [2.0, math.nan]]))
    assert list(zip(pred_idx.tolist(), tgt_idx.tolist())) == [(0, 1), (1, 0)]
    pred_idx, tgt_idx = assign(torch.tensor([[-math.inf, 0.0], [0.0, 5.0]]))
    assert list(zip(pred_idx.tolist(), tgt_idx.tolist())) == [(0, 0), (1, 1)]
    pred_idx, _ = assign(torch.full((2, 2), math.nan))
    assert len(pred_idx) == 2


def quadrant_masks(size: int) -> torch.Tensor:
    """Four (size, size) masks, one per quadrant: top-left, top-right, bottom-left, bottom-right."""
    half = size // 2
    masks = torch.zeros(4, size, size, dtype=torch.bool)
    masks[0, :half, :half] = masks[1, :half, half:] = masks[2, half:, :half] = masks[3, half:, half:] = True
    return masks


def test_forward_recovers_the_matching_masks():
    targets = quadrant_masks(16)
    # Query q predicts target order[q] (stride-4 logits); query 4 predicts nothing.
    order = [2, 0, 3, 1]
    pred_masks = torch.full((1, 5, 4, 4), -10.0)
    for query, target in enumerate(order):
        pred_masks[0, query] = torch.where(quadrant_masks(4)[target], 10.0, -10.0)
    object_logits = torch.zeros(1, 5, 2)
    outputs = {"pred_object_logits": object_logits, "pred_masks": pred_masks}
    matcher = HungarianMatcher(num_points=200)

    indices = matcher(outputs, [{"masks": targets[:3]}], generator=torch.Generator().manual_seed(1))
    pred_idx, tgt_idx = indices[0]
    assert pred_idx.tolist() == [0, 1, 3]
    assert tgt_idx.tolist() == [2, 0, 1]

    # An image without targets gets empty index tensors.
    (pred_idx, tgt_idx), = matcher(outputs, [{"masks": targets[:0]}])
    assert pred_idx.shape == tgt_idx.shape == (0,)


def test_object_probability_breaks_ties():
    # Identical masks: only P(object) (softmax index 0) decides which query gets the target.
    pred_masks = torch.zeros(1, 3, 4, 4)
    object_logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]]])
    outputs = {"pred_object_logits": object_logits, "pred_masks": pred_masks}
    (pred_idx, tgt_idx), = HungarianMatcher(num_points=50)(outputs, [{"masks": torch.ones(1, 16, 16)}])
    assert pred_idx.tolist() == [1] and tgt_idx.tolist() == [0]
