import copy
import logging
import math

import numpy as np
import pycocotools.mask as mask_api
import pytest
import torch
import torch.nn.functional as F

from clipvis.config import load_config
from clipvis.errors import InputError
from clipvis.model.clipvis_model import CLIPVIS, EAGER
from clipvis.model.weighted_scores import video_scores
from clipvis.model.text_classifier import text_embeddings
from clipvis.model.postprocess import resize_for_inference
from clipvis.bench.inference import compare_detections
from clipvis.model.postprocess import empty_rle, mask_score_terms, masks_to_original
from clipvis.video.inference import (AlignedFrames, SlotSwitches, SpilledFrames, StreamingVideo, build_matcher,
                                     segment_video, segment_video_variants, select_instances, stream_video_variants)
from clipvis.video.query_matching import match_video

TINY_MODEL = ["clip.pretrained=null", "model.hidden_dim=32", "model.mask_dim=32", "model.num_queries=10",
              "model.heads=4", "model.enc_layers=1", "model.enc_points=2", "model.dec_layers=3", "model.dec_ffn_dim=64",
              "model.enc_ffn_dim=64", "infer.min_size=48", "infer.frames_per_chunk=2", "infer.device=cpu"]
CLASSES = ["cat", "dog", "red ball"]


@pytest.fixture(scope="module")
def setup():
    """A tiny random model whose object head is scaled up, so that some frames have a tiny object
    probability (and get suppressed) while others do not."""
    cfg = load_config(None, TINY_MODEL + ["scoring.detections_per_video=30"])  # 10 slots x 3 classes: all
    torch.manual_seed(10)  # with this seed and scale, 24% of the (track, frame) pairs are suppressed
    model = CLIPVIS.from_config(cfg.model, cfg.clip).eval()
    with torch.no_grad():
        model.decoder.object_embed.layers[-1].weight.mul_(300.0)
    text = text_embeddings(model.clip, CLASSES, None)
    generator = torch.Generator().manual_seed(1)
    frames = [torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8, generator=generator) for _ in range(5)]
    return cfg, model, text, frames


def authors_order(model, frames, text, cfg):
    """The reference's order of work (docs/method.md §7): every frame's outputs kept to the end of the
    video, all frames matched, classified and scored at once, suppression by setting whole stride-4
    masks to -1, the mask score over all frames' pixels, then the selected masks upsampled."""
    resized = [resize_for_inference(frame, cfg.infer.min_size, cfg.infer.max_size, cfg.infer.resize)
               for frame in frames]
    window = cfg.infer.frames_per_chunk
    with torch.no_grad():
        windows = [model(model.preprocess(resized[i:i + window]), with_aux=False)
                   for i in range(0, len(resized), window)]
        outputs = {key: torch.cat([w[key] for w in windows]) for key in windows[0]}
        m = cfg.matching
        perms = match_video(outputs["pred_embds"], m.strategy, m.memory, m.topk, m.recency_weighting)  # (F, Q)
        take = lambda x: torch.stack([x[t][perms[t]] for t in range(len(perms))])  # noqa: E731
        object_logits, ious, masks = take(outputs["pred_object_logits"]), take(outputs["pred_ious"])[..., 0], \
            take(outputs["pred_masks"])
        class_logits = torch.cat([model.class_logits(outputs["clip_dense"][i:i + window], masks[i:i + window], text)
                                  for i in range(0, len(masks), window)])
    scores = video_scores(class_logits, ious, object_logits, cfg.scoring)  # (Q, C)
    classes = scores.shape[1]
    top, index = scores.flatten().topk(cfg.scoring.detections_per_video)
    queries, labels = index // classes, index % classes
    selected = masks.transpose(0, 1)[queries].clone()  # (k, F, h, w)
    per_frame = (class_logits.softmax(-1)[:, queries, labels].T.sigmoid()
                 * object_logits.softmax(-1)[:, queries, 0].T) ** 0.5  # (k, F)
    suppressed = per_frame < top[:, None] * 0.1
    selected[suppressed] = -1
    positive = (selected > 0).float().flatten(1)
    mask_scores = (selected.sigmoid().flatten(1) * positive).sum(1) / (positive.sum(1) + 1e-6)

    padded, image = resized_geometry(model, resized)
    records = []
    for score, label, track in zip((top * mask_scores).tolist(), labels.tolist(), selected):
        upsampled = F.interpolate(track[None], size=padded, mode="bilinear", align_corners=False)
        upsampled = upsampled[..., : image[0], : image[1]]
        upsampled = F.interpolate(upsampled, size=tuple(frames[0].shape[-2:]), mode="bilinear", align_corners=False)
        binary = np.asfortranarray((upsampled[0] > 0).permute(1, 2, 0).numpy().astype(np.uint8))
        records.append({"score": score, "category_id": label + 1,
                        "counts": tuple(rle["counts"].decode() for rle in mask_api.encode(binary))})
    return records, suppressed


def resized_geometry(model, resized):
    return tuple(model.preprocess(resized[:1]).shape[-2:]), tuple(resized[0].shape[-2:])


def test_streaming_equals_all_frames_in_memory(setup):
    cfg, model, text, frames = setup
    expected, suppressed = authors_order(model, frames, text, cfg)
    assert suppressed.any() and not suppressed.all()  # the case exercises the per-frame suppression

    streamed = segment_video(model, iter(frames), text, cfg, video_id=7)
    assert len(streamed) == len(expected) == 30
    assert all(r["video_id"] == 7 and len(r["segmentations"]) == 5 for r in streamed)
    assert all(s["size"] == [64, 80] for r in streamed for s in r["segmentations"])
    assert [r["score"] for r in streamed] == sorted((r["score"] for r in streamed), reverse=True)

    def key(record):
        return record["category_id"], record["counts"]

    streamed = sorted(({"score": r["score"], "category_id": r["category_id"],
                        "counts": tuple(s["counts"] for s in r["segmentations"])} for r in streamed), key=key)
    expected = sorted(expected, key=key)
    assert [key(r) for r in streamed] == [key(r) for r in expected]
    # Scores of 1e-7 and below carry the float32 rounding of their logits, which differs between CPU kernels
    # (measured: 1.2e-5 relative on an Intel Xeon with AMX): they are compared to 1e-10 absolute.
    np.testing.assert_allclose([r["score"] for r in streamed], [r["score"] for r in expected], rtol=1e-5, atol=1e-10)


def test_slot_switches_count_changed_queries_in_slots_showing_objects():
    perms = torch.tensor([[0, 1, 2], [1, 0, 2], [1, 0, 2], [2, 0, 1]])  # (frames, slots)
    shown = torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)  # in slot order
    object_logits = torch.stack([torch.where(shown, 5.0, -5.0), torch.zeros(4, 3)], dim=-1)  # (F, Q, 2)
    video = StreamingVideo(3, 2, load_config().scoring, (4, 4))
    try:
        for chunk in (slice(0, 2), slice(2, 4)):  # a switch between chunks counts too
            video.add(AlignedFrames(object_logits[chunk], torch.ones(2, 3), torch.zeros(2, 3, 4, 4),
                                    torch.zeros(2, 3, 2), (16, 16), (16, 16), (4, 4), [[empty_rle((4, 4))] * 3] * 2,
                                    perms=perms[chunk]))
    finally:
        video.close()
    # frame 1: slots 0 and 2 shown, slot 0 changed; frame 2: 3 shown, none changed; frame 3: slot 2 shown, changed
    assert video.switches == SlotSwitches(object_slots=6, switches=2)
    assert video.switches.rate() == pytest.approx(1 / 3)


def test_variants_count_slot_switches_of_their_own_matching(setup):
    cfg, model, text, frames = setup
    resized = model.preprocess([resize_for_inference(f, cfg.infer.min_size, cfg.infer.max_size, cfg.infer.resize)
                                for f in frames])
    model = copy.deepcopy(model)
    network = model.forward

    def forward_with_random_embeddings(images, with_aux, **options):
        """The random model's queries keep their order; random embeddings (a function of each frame) do not."""
        outputs = network(images, with_aux=with_aux, **options)
        seeds = [int(image.sum() * 1000) % 2**31 for image in images]
        outputs["pred_embds"] = torch.stack([torch.randn(outputs["pred_embds"].shape[1:],
                                                         generator=torch.Generator().manual_seed(seed))
                                             for seed in seeds])
        return outputs

    model.forward = forward_with_random_embeddings
    with torch.no_grad():  # shift the object logit so that about half of the slots show an object, with
        # the 0.5 threshold in the widest gap of the middle half (no slot sits on it, to float rounding)
        margin = model(resized, with_aux=False)["pred_object_logits"].diff(dim=-1).flatten().sort().values
        middle = margin[len(margin) // 4: 3 * len(margin) // 4]
        widest = middle.diff().argmax()
        model.decoder.object_embed.layers[-1].bias[0] += (middle[widest] + middle[widest + 1]) / 2
        outputs = model(resized, with_aux=False)
    variants = {"adjacent": load_config(None, TINY_MODEL + ["matching.strategy=adjacent"]), "topk": cfg}
    expected = {}
    for name, variant in variants.items():
        perms = match_video(outputs["pred_embds"], variant.matching.strategy)  # (F, Q)
        object_probs = torch.stack([p[q] for p, q in zip(outputs["pred_object_logits"].softmax(-1)[..., 0], perms)])
        showing = object_probs[1:] >= 0.5
        expected[name] = SlotSwitches(int(showing.sum()), int((showing & (perms[1:] != perms[:-1])).sum()))
    assert all(0 < e.switches for e in expected.values())  # not a trivial case

    counted = {}
    segment_video_variants(model, iter(frames), text, variants, switches=counted)
    assert counted == expected


def test_streamed_records_are_read_from_the_temporary_file_one_at_a_time(setup, monkeypatch):
    cfg, model, text, frames = setup
    expected = segment_video(model, iter(frames), text, cfg)
    reads = []
    original = SpilledFrames.mask_counts
    monkeypatch.setattr(SpilledFrames, "mask_counts", lambda self, *a: reads.append(a) or original(self, *a))
    with stream_video_variants(model, iter(frames), text, {"": cfg}) as streams:
        records = streams[""]
        assert reads == []  # nothing is read before a record is taken
        first = next(records)
        assert 0 < len(reads) <= len(frames)  # one mask per frame at most, of this record only
        streamed = [first, *records]
    assert streamed == expected


def test_category_ids_and_top_k(setup):
    cfg, model, text, frames = setup
    cfg = load_config(None, TINY_MODEL + ["scoring.detections_per_video=4"])
    records = segment_video(model, frames[:2], text, cfg, category_ids=[10, 20, 30])
    assert len(records) == 4
    assert {r["category_id"] for r in records} <= {10, 20, 30}


def test_bf16_option_keeps_the_detections_close_to_float32(setup):
    cfg, model, text, frames = setup
    model = copy.deepcopy(model)
    with torch.no_grad():  # undo the fixture's scaled-up object head, which magnifies any rounding 300 times
        model.decoder.object_embed.layers[-1].weight.div_(300.0)
    bf16 = copy.deepcopy(cfg)
    bf16.infer.precision = "bf16"
    reference = segment_video(model, iter(frames), text, cfg)
    assert model.clip.channels_last  # inference's layout for a ResNet trunk
    result = segment_video(model, iter(frames), text, bf16)
    assert [r["segmentations"][0]["size"] for r in result] == [r["segmentations"][0]["size"] for r in reference]
    change = compare_detections(reference, result)
    assert change["kept"] >= 0.8 * len(reference) and change["mean_iou"] > 0.9
    assert change["max_score_delta"] < 0.05 * change["max_score"]


def test_onednn_linear_layers_give_the_detections_of_pytorchs_blas(setup):
    """infer.onednn_linear (the default) against PyTorch's own float32 linear layers: the same records."""
    cfg, model, text, frames = setup
    blas = copy.deepcopy(cfg)
    blas.infer.onednn_linear = False
    reference = segment_video(model, iter(frames), text, blas)
    result = segment_video(model, iter(frames), text, cfg)
    assert [(r["category_id"], r["segmentations"]) for r in result] == \
        [(r["category_id"], r["segmentations"]) for r in reference]
    assert np.allclose([r["score"] for r in result], [r["score"] for r in reference], rtol=1e-4, atol=1e-6)


def test_compiled_network_gives_the_eager_detections(setup):
    """infer.compile: the network through torch.compile (a real inductor compilation, about a minute)."""
    cfg, model, text, frames = setup
    model = copy.deepcopy(model)
    compiled = copy.deepcopy(cfg)
    compiled.infer.compile = True
    reference = segment_video(model, iter(frames), text, cfg)
    result = segment_video(model, iter(frames), text, compiled)
    assert callable(model._compiled_forward)  # compiled, not fallen back to eager
    copied = copy.deepcopy(model)  # a copy of a compiled model runs its own weights
    with torch.no_grad():
        copied.decoder.object_embed.layers[-1].bias.add_(5.0)
    images = model.preprocess([resize_for_inference(frames[0], cfg.infer.min_size, cfg.infer.max_size)])
    with torch.inference_mode():
        torch.testing.assert_close(copied.infer(images, compiled=True)["pred_object_logits"],
                                   copied(images, with_aux=False)["pred_object_logits"], atol=1e-4, rtol=1e-4)
    change = compare_detections(reference, result, min_iou=0.99)
    assert change["kept"] == len(reference) == len(result)
    assert change["max_score_delta"] < 1e-4 * change["max_score"]


def test_the_network_compiles_to_one_graph(setup):
    """No graph break (a break inside the encoder's layer loop sends the whole loop back to eager)."""
    cfg, model, _, frames = setup
    images = model.preprocess([resize_for_inference(frames[0], cfg.infer.min_size, cfg.infer.max_size)])
    with torch.inference_mode():
        explanation = torch._dynamo.explain(copy.deepcopy(model).forward)(images, with_aux=False)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_a_failed_compilation_falls_back_to_eager_with_a_warning(setup, monkeypatch, caplog):
    import torch._inductor.config as inductor_config

    cfg, model, _, _ = setup
    model = copy.deepcopy(model)
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-compiler",))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)  # nothing compiled earlier is reused
    images = torch.randn(1, 3, 64, 64)
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="clipvis.model.clipvis_model"):
        outputs = model.infer(images, compiled=True)
        assert model._compiled_forward == EAGER and "torch.compile failed" in caplog.text
        eager = model.infer(images)  # the eager network, as the fallback runs it
        again = model.infer(images, compiled=True)  # no second try
    assert caplog.text.count("torch.compile failed") == 1
    for key in ("pred_masks", "pred_object_logits", "pred_embds"):
        assert torch.equal(outputs[key], eager[key]) and torch.equal(again[key], eager[key])


def test_select_instances_by_hand():
    """Two slots, two classes, three frames; the top two pairs are (slot 0, class 0) and (slot 1, class 0)."""
    video = torch.tensor([[0.8, 0.1], [0.3, 0.05]])
    object_probs = torch.tensor([[0.9, 0.001],  # frame 0: (slot 0, slot 1)
                                 [0.001, 0.8],
                                 [0.5, 0.0017]])
    class_probs = torch.zeros(3, 2, 2)
    class_probs[1, 0, 0] = 0.5  # slot 0, frame 1: sqrt(sigmoid(0.5) * 0.001) = 0.025 < 0.08: suppressed
    class_probs[0, 1, 0] = 0.0  # slot 1, frame 0: sqrt(0.5 * 0.001) = 0.022 < 0.03: suppressed
    class_probs[2, 1, 0] = 1.0  # slot 1, frame 2: sqrt(sigmoid(1) * 0.0017) = 0.035 >= 0.03: kept
    class_probs[2, 1, 1] = 0.0  # (with p = 0 it would be sqrt(0.5 * 0.0017) = 0.029: suppressed)
    mask_sums = torch.tensor([[2.0, 4.0], [5.0, 1.8], [1.5, 0.9]], dtype=torch.float64)
    mask_counts = torch.tensor([[3, 5], [6, 2], [2, 1]])

    selection = select_instances(video, object_probs, class_probs, mask_sums, mask_counts, k=2)
    assert selection.queries.tolist() == [0, 1] and selection.labels.tolist() == [0, 0]
    assert selection.kept.tolist() == [[True, False, True], [False, True, True]]
    m0, m1 = 3.5 / (5 + 1e-6), 2.7 / (3 + 1e-6)
    assert selection.mask_scores.tolist() == pytest.approx([m0, m1], rel=1e-6)
    assert selection.scores.tolist() == pytest.approx([0.8 * m0, 0.3 * m1], rel=1e-6)


def test_select_instances_same_slot_several_labels_and_order():
    video = torch.tensor([[0.5, 0.6], [0.1, 0.2]])
    ones = torch.ones(1, 2)
    selection = select_instances(video, ones, torch.zeros(1, 2, 2), torch.tensor([[1.0, 3.0]]),
                                 torch.tensor([[1, 4]]), k=3)
    # final scores: (0,1) 0.6*1, (0,0) 0.5*1, (1,1) 0.2*0.75
    assert list(zip(selection.queries.tolist(), selection.labels.tolist())) == [(0, 1), (0, 0), (1, 1)]
    assert selection.scores.tolist() == pytest.approx([0.6, 0.5, 0.15], rel=1e-5)


def test_mask_score_terms_count_only_positive_logits():
    logits = torch.tensor([[[2.0, -1.0], [0.0, 1.0]]])
    sums, counts = mask_score_terms(logits)
    assert counts.tolist() == [2]
    assert sums.item() == pytest.approx(1 / (1 + math.exp(-2)) + 1 / (1 + math.exp(-1)))


def test_masks_to_original_crops_the_padding_before_resizing():
    # Stride-4 logits 2x2: top row negative, bottom row positive. The padded input is 8x8; the image is
    # its top half, where bilinear upsampling stays below 0 (row 3 reads -5 + 0.375 * 10 = -1.25).
    logits = torch.tensor([[[-5.0, -5.0], [5.0, 5.0]]])
    assert not masks_to_original(logits, (8, 8), (4, 8), (6, 12)).any()
    full = masks_to_original(logits, (8, 8), (8, 8), (8, 8))
    assert full.shape == (1, 8, 8) and full[0, 4:].all() and not full[0, :4].any()


def test_masks_to_original_matches_both_resizes():
    logits = torch.randn(3, 8, 12, generator=torch.Generator().manual_seed(0))
    for image_size, output_size in [((30, 40), (30, 40)), ((30, 40), (45, 61))]:
        expected = F.interpolate(logits[None], size=(32, 48), mode="bilinear", align_corners=False)
        expected = F.interpolate(expected[..., :30, :40], size=output_size, mode="bilinear", align_corners=False)
        assert torch.equal(masks_to_original(logits, (32, 48), image_size, output_size), expected[0] > 0)


def test_spilled_frames_read_back_exactly():
    probs = torch.rand(5, 3, 4)
    counts = [[f"f{t}q{q}" * (t + q) for q in range(3)] for t in range(5)]  # "" for frame 0, slot 0
    store = SpilledFrames(3, 4)
    for t in range(5):
        store.append(probs[t], counts[t])
    frames, queries, labels = torch.tensor([0, 4, 2, 3]), torch.tensor([1, 2, 0, 0]), torch.tensor([3, 0, 1, 2])
    assert torch.equal(store[frames, queries, labels], probs[frames, queries, labels])
    assert [[store.mask_counts(t, q) for q in range(3)] for t in range(5)] == counts
    store.close()


def test_bad_matching_setting_names_the_key():
    cfg = load_config(None, ["matching.topk=12", "matching.memory=9"])
    with pytest.raises(InputError, match="matching.topk"):
        build_matcher(cfg)


def test_empty_video_is_input_error(setup):
    cfg, model, text, _ = setup
    with pytest.raises(InputError, match="no frames"):
        segment_video(model, [], text, cfg, video_id=3)
