"""`clipvis matching-test`: shuffled, noisy matching inputs, query ownership, identity recovery, and the command on
the tiny world."""

import argparse
import json

import numpy as np
import pytest
import pycocotools.mask as mask_api
import torch

from clipvis.config import load_config
from clipvis.bench import matching as matching_test
from clipvis.commands import matching_test as matching_test_command
from clipvis.model.clipvis_model import CLIPVIS
from clipvis.model.checkpoint import save_checkpoint
from clipvis.model.postprocess import empty_rle
from clipvis.reports.matching_results import handover_sentence
from clipvis.video.inference import AlignedFrames
from clipvis.video.query_matching import TemporalMatcher
from conftest import TINY_MODEL


def test_shuffled_queries_are_put_back_in_order_by_matching_without_noise():
    torch.manual_seed(0)
    tracks = torch.randn(6, 16)  # the same 6 queries in every frame, in the same network order
    matcher = matching_test.ShuffledNoisyMatcher(TemporalMatcher("adjacent"), noise=0.0, seed=3)
    perms = [matcher.step(tracks + 0.01 * torch.randn(6, 16)) for _ in range(5)]
    first = perms[0]
    assert all(torch.equal(perm, first) for perm in perms)  # every slot keeps its query
    assert not torch.equal(first, torch.arange(6))  # slots follow the shuffled first frame


class Recorder:
    def __init__(self):
        self.seen = []

    def step(self, embeddings):
        self.seen.append(embeddings.clone())
        return torch.arange(len(embeddings))


def test_the_permutation_indexes_the_frames_own_queries():
    frames = torch.randn(4, 5, 8)
    recorder = Recorder()  # answers "slot j takes the j-th query it was handed"
    matcher = matching_test.ShuffledNoisyMatcher(recorder, noise=0.0, seed=7)
    for t, frame in enumerate(frames):
        perm = matcher.step(frame)
        assert torch.equal(recorder.seen[t], frame[perm]) and not torch.equal(perm, torch.arange(5))


def test_every_strategy_sees_the_same_shuffles_and_noise_for_one_seed():
    frames = torch.randn(4, 5, 8)
    recorders = [Recorder(), Recorder(), Recorder()]
    for recorder, seed in zip(recorders, [11, 11, 12]):
        matcher = matching_test.ShuffledNoisyMatcher(recorder, noise=1.0, seed=seed)
        for frame in frames:
            matcher.step(frame)
    assert all(torch.equal(a, b) for a, b in zip(recorders[0].seen, recorders[1].seen))
    assert not any(torch.equal(a, b) for a, b in zip(recorders[0].seen, recorders[2].seen))


def test_noise_grows_with_its_level():
    frame = torch.randn(50, 32)
    distances = []
    for level in (0.0, 0.5, 2.0):
        recorder = Recorder()
        matching_test.ShuffledNoisyMatcher(recorder, noise=level, seed=5).step(frame)
        order = torch.randperm(50, generator=torch.Generator().manual_seed(5))
        distances.append(float((recorder.seen[0] - frame[order]).norm(dim=-1).mean() / frame.norm(dim=-1).mean()))
    assert distances[0] == 0 and 0.35 < distances[1] < 0.65 and 1.5 < distances[2] < 2.5


def test_identity_recovery_counts_frames_that_keep_every_seen_object_in_its_first_slot():
    identity = matching_test.IdentityRecovery()
    identity.new_video()
    owners = torch.tensor([[0, 1, -1], [0, 1, -1], [0, 1, -1], [-1, 1, 0]])  # per frame, per query
    perms = torch.tensor([[0, 1, 2], [0, 1, 2], [1, 0, 2], [2, 1, 0]])  # slot j holds query perms[j]
    identity.add(perms, owners)
    # frame 0: first sight; frame 1 right; frame 2: objects swapped slots; frame 3: object 0 (query 2) in slot 0 again
    assert (identity.frames, identity.right) == (3, 2)
    identity.new_video()  # object indices start again: nothing is known
    identity.add(torch.tensor([[1, 0, 2]]), torch.tensor([[0, 1, -1]]))
    assert (identity.frames, identity.right) == (3, 2) and identity.rate() == 2 / 3
    assert matching_test.IdentityRecovery().rate() is None


def test_handovers_count_objects_passing_between_confident_queries_and_whether_embeddings_follow():
    handovers = matching_test.QueryHandovers()
    handovers.new_video()
    a, b, c = torch.eye(3)
    # frame 0: object 0 in query 0; frame 1: object 0 kept; frame 2: handed to query 1, whose embedding has
    # become query 0's old one (followed); frame 3: handed back to query 0, but query 1 stays most like itself.
    embeddings = torch.stack([torch.stack([a, b, c]), torch.stack([a, b, c]), torch.stack([b, a, c]),
                              torch.stack([a + b, a, c])])
    owners = torch.tensor([[0, -1, -1], [0, -1, -1], [-1, 0, -1], [0, -1, -1]])
    handovers.add(embeddings, owners, torch.ones(4, 3))
    summary = handovers.summary()
    assert (summary["pairs"], summary["handovers"], summary["followed_rate"]) == (3, 2, 0.5)
    assert summary["cosine_kept"] == 1.0 and summary["cosine_handover_new_owner"] == pytest.approx((1 + 0.5 ** 0.5) / 2)
    assert summary["cosine_handover_old_query"] == 0.5  # query 0: a -> b (0), then query 1: a -> a (1)
    assert (summary["owned_pairs"], summary["owner_changes"]) == (3, 2)  # all confident here: the same pairs
    handovers.new_video()  # a new video does not pair with the last frame of the previous one
    handovers.add(embeddings[:1], torch.tensor([[-1, 0, -1]]), torch.ones(1, 3))
    assert handovers.summary()["pairs"] == 3


def test_handovers_ignore_queries_not_confident_of_an_object():
    handovers = matching_test.QueryHandovers()
    handovers.new_video()
    owners = torch.tensor([[0, -1], [-1, 0]])
    handovers.add(torch.randn(2, 2, 4), owners, torch.tensor([[0.9, 0.9], [0.9, 0.4]]))
    assert handovers.summary() == {"pairs": 0, "handovers": 0, "handover_rate": None, "followed_rate": None,
                                   "cosine_kept": None, "cosine_handover_new_owner": None,
                                   "cosine_handover_old_query": None,
                                   "owned_pairs": 1, "owner_changes": 1, "owner_change_rate": 1.0}


def rle(mask):
    encoded = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def test_a_query_owns_the_object_its_mask_overlaps_at_least_half():
    masks = torch.full((1, 3, 8, 8), -1.0)  # stride-4 logits of a 32 x 32 frame
    masks[0, 0, 0:4, 0:4] = 1  # exactly the first object
    masks[0, 1, 4:8, 4:6] = 1  # half of the second object: IoU 0.5
    masks[0, 2, 0:2, 4:8] = 1  # nothing
    network = AlignedFrames(torch.zeros(1, 3, 2), torch.zeros(1, 3), masks, torch.zeros(1, 3, 4), (32, 32), (32, 32),
                            (32, 32), [[empty_rle((32, 32))] * 3])
    first, second = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    first[0:16, 0:16] = True
    second[16:32, 16:32] = True
    tracks = [{"segmentations": [rle(first)]}, {"segmentations": [None]}, {"segmentations": [rle(second)]}]
    assert matching_test.query_owners(network, tracks, range(1)).tolist() == [[0, 2, -1]]


def test_command_writes_a_row_per_variant_and_noise_level_after_the_network_order(tiny_world, tmp_path):
    params = ["--set", *TINY_MODEL, f"data.root={tiny_world}", f"clip.text_cache={tmp_path / 'text'}"]
    cfg = load_config("params/toy/default.yaml", params[1:])
    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, CLIPVIS.from_config(cfg.model, cfg.clip), cfg)
    parser = argparse.ArgumentParser()
    matching_test_command.add_arguments(parser)
    args = parser.parse_args(["--params", "params/toy/default.yaml", "--benchmark", "toy_ovis", "--checkpoint",
                              str(checkpoint), "--variants", "adjacent", "T9_K3", "--noise", "0", "1",
                              "--out", str(tmp_path / "out"), *params])
    assert matching_test_command.main(args) == 0
    report = json.loads((tmp_path / "out" / "matching_test.json").read_text())
    assert report["benchmark"] == "toy_ovis" and report["noise_levels"] == [0.0, 1.0]
    assert [(row["variant"], row["noise"]) for row in report["rows"]] == [
        ("network order", 0.0), ("adjacent", 0.0), ("T9_K3", 0.0), ("adjacent", 1.0), ("T9_K3", 1.0)]
    for row in report["rows"]:
        assert set(row) == {"variant", "noise", "identity_recovery", "frames", "AP", "APb", "APn"}
        assert 0 <= row["AP"] <= 1
    assert set(report["handovers"]) >= {"pairs", "handovers", "handover_rate", "followed_rate"}


def test_handover_sentence_adds_owner_changes_of_any_confidence_when_the_report_has_them():
    found = {"pairs": 563, "handovers": 0, "handover_rate": 0.0, "followed_rate": None, "cosine_kept": 0.99,
             "cosine_handover_new_owner": None, "cosine_handover_old_query": None}
    old = handover_sentence({"handovers": found, "object_shown": 0.5})
    assert "0 of 563 adjacent-frame pairs" in old and "any confidence" not in old
    new = handover_sentence({"handovers": {**found, "owned_pairs": 1418, "owner_changes": 368,
                                           "owner_change_rate": 368 / 1418}, "object_shown": 0.5})
    assert new.startswith(old) and new.endswith("owner changed in 368 of 1418 adjacent-frame pairs (26.0 %).")
