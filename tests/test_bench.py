"""Pieces of `clipvis bench`: the per-stage clock of a forward pass and the comparison of detections."""

import torch

from clipvis.config import load_config
from clipvis.bench.model import NETWORK_STAGES, StageClock, forward_and_classify
from clipvis.model.clipvis_model import CLIPVIS
from clipvis.model.text_classifier import text_embeddings
from clipvis.bench.inference import compare_detections, synthetic_frames, video_mask_iou
from clipvis.model.postprocess import encode_masks

TINY = ["clip.pretrained=null", "model.hidden_dim=32", "model.mask_dim=32", "model.num_queries=10", "model.heads=4",
        "model.enc_layers=2", "model.dec_layers=3", "model.dec_ffn_dim=64", "model.enc_ffn_dim=64"]


def test_stage_clock_splits_a_forward_pass_and_leaves_the_model_as_it_was():
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = CLIPVIS.from_config(cfg.model, cfg.clip).eval()
    text = text_embeddings(model.clip, ["cat", "dog"], None)
    image = model.preprocess(list(synthetic_frames(1, 64, 96, seed=0)))
    with torch.inference_mode():
        expected = forward_and_classify(model, image, text)
        clock = StageClock(model, torch.device("cpu"))
        start = clock.now()
        with clock.active():
            outputs = forward_and_classify(model, image, text, clock)
        total = clock.now() - start
        after = forward_and_classify(model, image, text)
    assert all(clock.seconds[stage] > 0 for stage in NETWORK_STAGES)
    assert clock.seconds["deformable_core_s"] < clock.seconds["pixel_decoder_s"]
    parts = sum(v for k, v in clock.seconds.items() if k != "deformable_core_s")
    assert parts <= total
    for key in ("pred_masks", "class_logits"):
        assert torch.equal(outputs[key], expected[key]) and torch.equal(after[key], expected[key])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def record(category, masks, score):
    return {"category_id": category, "score": score,
            "segmentations": [{"size": list(m.shape), "counts": c} for m, c in zip(masks, encode_masks(masks))]}


def test_compare_detections_keeps_same_category_overlapping_masks():
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True  # 16 pixels a frame
    shifted = torch.zeros_like(masks)
    shifted[:, 2:6, 3:7] = True  # 12 of 16 overlap
    assert abs(video_mask_iou(record(1, masks, 0)["segmentations"], record(1, shifted, 0)["segmentations"])
               - 12 / 20) < 1e-9
    reference = [record(1, masks, 0.9), record(2, masks, 0.5)]
    other = [record(1, shifted, 0.8), record(3, masks, 0.5)]  # category 2 is gone
    result = compare_detections(reference, other)
    assert result["kept"] == 1 and result["detections"] == 2
    assert abs(result["mean_iou"] - 0.6) < 1e-4 and abs(result["max_score_delta"] - 0.1) < 1e-6
    assert compare_detections(reference, reference)["kept"] == 2


def test_speed_and_memory_benches_build_the_papers_network_not_the_toy_defaults():
    from dataclasses import asdict

    from clipvis.bench.inference import MEMORY_SCALES, PAPER_PARAMS, _config

    paper = load_config(PAPER_PARAMS)
    for overrides in (["clip.model=RN50"], ["clip.model=convnext_base_w_320"], MEMORY_SCALES["paper"][0]):
        cfg = _config(overrides)
        assert asdict(cfg.model) == asdict(paper.model)  # 256 wide, 100 queries, 6 + 9 layers, 4 points
        assert cfg.infer.frames_per_chunk == paper.infer.frames_per_chunk and cfg.clip.pretrained is None
    assert (paper.model.hidden_dim, paper.model.num_queries, paper.model.enc_points) == (256, 100, 4)
    assert _config(MEMORY_SCALES["narrow"][0]).model.hidden_dim == 64


def test_bench_infer_refuses_an_unknown_mode_before_building_anything():
    import pytest

    from clipvis.bench.inference import bench_infer
    from clipvis.errors import InputError

    with pytest.raises(InputError, match="unknown mode"):
        bench_infer(frames=1, clips=("RN50",), modes=("eager", "fast"))
