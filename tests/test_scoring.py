import math

import torch

from clipvis.config import ScoringConfig
from clipvis.model.weighted_scores import VideoScoreSums, image_scores, video_scores


def logits_for(probs):
    return torch.tensor(probs).log()


def test_image_score_is_root_of_product():
    class_logits = logits_for([[0.6, 0.4]])
    scores = image_scores(class_logits, torch.tensor([0.5]), torch.tensor([[math.log(3.0), 0.0]]), ScoringConfig())
    # p = (0.6, 0.4), u = 0.5, o = 3 / (3 + 1) = 0.75
    assert torch.allclose(scores, torch.tensor([[math.sqrt(0.6 * 0.5 * 0.75), math.sqrt(0.4 * 0.5 * 0.75)]]))


def test_image_score_switches():
    class_logits, ious, objects = logits_for([[0.6, 0.4]]), torch.tensor([0.5]), torch.tensor([[math.log(3.0), 0.0]])
    no_object = image_scores(class_logits, ious, objects, ScoringConfig(object_score=False))
    assert torch.allclose(no_object, torch.tensor([[math.sqrt(0.3), math.sqrt(0.2)]]))
    no_iou = image_scores(class_logits, ious, objects, ScoringConfig(iou_score=False))
    assert torch.allclose(no_iou, torch.tensor([[math.sqrt(0.45), math.sqrt(0.3)]]))
    unweighted = image_scores(class_logits, ious, objects, ScoringConfig(weighted=False))
    assert torch.allclose(unweighted, torch.tensor([[0.6, 0.4]]))


def test_video_score_by_hand():
    # one query, two classes, two frames
    class_logits = logits_for([[[0.8, 0.2]], [[0.5, 0.5]]])  # (F=2, Q=1, C=2)
    ious = torch.tensor([[0.9], [0.4]])
    objects = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])  # frame-mean logits (1, 0) -> o = e / (e + 1)
    o = math.e / (math.e + 1)
    a0 = (math.sqrt(0.8 * 0.9) + math.sqrt(0.5 * 0.4)) / 2
    a1 = (math.sqrt(0.2 * 0.9) + math.sqrt(0.5 * 0.4)) / 2
    expected = torch.tensor([[math.sqrt(a0 * o), math.sqrt(a1 * o)]])
    assert torch.allclose(video_scores(class_logits, ious, objects, ScoringConfig()), expected, atol=1e-6)
    unweighted = video_scores(class_logits, ious, objects, ScoringConfig(weighted=False))
    assert torch.allclose(unweighted, torch.tensor([[0.65, 0.35]]), atol=1e-6)


def test_streaming_sums_equal_all_at_once():
    torch.manual_seed(0)
    class_logits, ious, objects = torch.randn(7, 5, 3), torch.rand(7, 5), torch.randn(7, 5, 2)
    sums = VideoScoreSums.empty(5, 3, ScoringConfig())
    for frame in range(7):
        sums.add(class_logits[frame : frame + 1], ious[frame : frame + 1], objects[frame : frame + 1])
    assert torch.allclose(sums.scores(), video_scores(class_logits, ious, objects, ScoringConfig()), atol=1e-6)
