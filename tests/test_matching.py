import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from clipvis.video.query_matching import STRATEGIES, TemporalMatcher, match_video


def unit(*values):
    vector = torch.tensor(values, dtype=torch.float32)
    return vector / vector.norm()


def noisy_tracks(frames, queries, dim, noise, seed):
    """A video whose query j is object j plus noise in every frame: the right perm is arange."""
    generator = torch.Generator().manual_seed(seed)
    objects = torch.randn(queries, dim, generator=generator)
    return objects + noise * torch.randn(frames, queries, dim, generator=generator)


def reference_match(video, strategy, memory, topk, recency_weighting):
    """The matching rules written out directly in numpy, in the paper's orientation (current x slot)."""
    video = np.asarray(video, dtype=np.float64)
    normalise = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    aligned = [video[0]]
    perms = [np.arange(video.shape[1])]
    for frame in video[1:]:
        if strategy == "adjacent":
            references = [aligned[-1]]
        elif strategy == "longterm":
            references = [np.mean(aligned, axis=0)]
        else:
            references = aligned[-memory:]
        maps = [1.0 - normalise(frame) @ normalise(reference).T for reference in references]
        if strategy == "topk":
            pis, totals = [], []
            for cost in maps:
                slots, current = linear_sum_assignment(cost.T)
                pis.append(current)
                totals.append(cost[current, slots].sum())
            order = np.argsort(totals, kind="stable")
            if recency_weighting and len(maps) < topk:
                perm = pis[order[0]]
            else:
                if recency_weighting:
                    maps = [(i + 1) * cost for i, cost in enumerate(maps)]
                chosen = order[:topk]
                mean = sum(maps[i] for i in chosen) / len(chosen)
                perm = linear_sum_assignment(mean.T)[1]
        else:
            perm = linear_sum_assignment(maps[0].T)[1]
        perms.append(perm)
        aligned.append(frame[perm])
    return np.stack(perms)


def occlusion_video():
    """Tracks A, B (and a static C) cross during a 2-frame occlusion at frames 5-6.

    In the occluded frames A and B both look like the mix m = (a+b)/sqrt2 plus an occluder
    component ±c; a small bias makes frame 5 look swapped, and the ±c pattern then carries
    the swap through frame 6 so that the slot holding A ends up leaning towards b. Adjacent
    matching keeps this swap for ever; top-K, still remembering clean frames 0-4, restores
    A and B at frame 7. Query 0 is A, 1 is B, 2 is C in every frame.
    """
    a, b, c, d = torch.eye(5)[:4]
    m = (a + b) / 2**0.5
    clean = torch.stack([a, b, d])
    frame5 = torch.stack([m + 0.3 * c + 0.05 * b, m - 0.3 * c + 0.05 * a, d])
    frame6 = torch.stack([m + 0.3 * c + 0.05 * a, m - 0.3 * c + 0.05 * b, d])
    return torch.stack([clean] * 5 + [frame5, frame6] + [clean] * 3)


def test_occlusion_swaps_adjacent_tracks_but_not_topk():
    video = occlusion_video()
    same, swapped = [0, 1, 2], [1, 0, 2]
    assert match_video(video, "adjacent").tolist() == [same] * 5 + [swapped] * 5
    expected_topk = [same] * 5 + [swapped] * 2 + [same] * 3
    assert match_video(video, "topk", memory=9, topk=3).tolist() == expected_topk
    assert match_video(video, "topk", memory=9, topk=3, recency_weighting=True).tolist() == expected_topk


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_tracks_are_recovered_from_shuffled_frames(strategy):
    video = noisy_tracks(frames=7, queries=5, dim=8, noise=0.1, seed=0)
    generator = torch.Generator().manual_seed(1)
    shuffles = [torch.arange(5)] + [torch.randperm(5, generator=generator) for _ in range(6)]
    shuffled = video.clone()
    for f, shuffle in enumerate(shuffles):
        shuffled[f, shuffle] = video[f]  # object j now sits at query shuffle[j]
    assert torch.equal(match_video(shuffled, strategy, memory=3, topk=2), torch.stack(shuffles))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_shuffling_the_queries_of_one_frame_shuffles_its_perm(strategy):
    video = noisy_tracks(frames=8, queries=6, dim=16, noise=2.0, seed=2)
    perm = match_video(video, strategy, memory=4, topk=2)
    assert not torch.equal(perm, torch.arange(6).expand(8, 6))  # the noise makes matching non-trivial
    sigma = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled = video.clone()
    shuffled[4] = video[4, sigma]  # new query i is old query sigma[i]
    new_perm = match_video(shuffled, strategy, memory=4, topk=2)
    inverse = torch.argsort(sigma)
    assert torch.equal(new_perm[4], inverse[perm[4]])
    assert torch.equal(shuffled[4, new_perm[4]], video[4, perm[4]])
    assert torch.equal(torch.cat([new_perm[:4], new_perm[5:]]), torch.cat([perm[:4], perm[5:]]))


@pytest.mark.parametrize("strategy", ["topk", "adjacent"])
def test_cosine_strategies_ignore_embedding_scale(strategy):
    video = noisy_tracks(frames=6, queries=4, dim=8, noise=2.0, seed=3)
    scales = torch.tensor([0.01, 5.0, 1.0, 100.0, 0.5, 2.0])[:, None, None]
    assert torch.equal(match_video(video * scales, strategy), match_video(video, strategy))


def first_frames_video():
    """Frame 1 is the frame-0 tracks in swapped query order; frame 2 separates averaging from best-frame.

    Against frame 0 (costs S0 ≈ 1.18), frame 2 clearly keeps its query order (swap costs 0.82 more).
    Against aligned frame 1 (S1 ≈ 0.18, the better frame), frame 2 prefers the swap by 0.65.
    So: the plain mean of both maps keeps the order; the single best frame swaps; weighting
    frame 1 twice (recency, K=2) swaps too.
    """
    frame0 = torch.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
    slot0, slot1 = unit(0.1, 0, 1, -0.5), unit(0, 0.1, 1, 0.5)  # a little of a / b each
    frame1 = torch.stack([slot1, slot0])
    frame2 = torch.stack([unit(0.4, 0, 0.8, 0.4), unit(0, 0.4, 0.8, -0.4)])
    return torch.stack([frame0, frame1, frame2])


def test_first_frames():
    video = first_frames_video()
    # Paper reading: while memory holds fewer than K=3 frames, average all of them.
    assert match_video(video, "topk", memory=9, topk=3).tolist() == [[0, 1], [1, 0], [0, 1]]
    # Released code: while memory holds fewer than K frames, use the single best frame.
    assert match_video(video, "topk", memory=9, topk=3, recency_weighting=True).tolist() == [[0, 1], [1, 0], [1, 0]]
    assert match_video(video[:1], "topk").tolist() == [[0, 1]]


def test_recency_weighting_on_hand_built_three_frames():
    video = first_frames_video()
    # K=2, M=2 at frame 2: unweighted mean keeps the order, weights (1, 2) make frame 1 win.
    assert match_video(video, "topk", memory=2, topk=2).tolist() == [[0, 1], [1, 0], [0, 1]]
    assert match_video(video, "topk", memory=2, topk=2, recency_weighting=True).tolist() == [[0, 1], [1, 0], [1, 0]]
    for recency_weighting in (False, True):
        expected = reference_match(video, "topk", 2, 2, recency_weighting)
        assert match_video(video, "topk", 2, 2, recency_weighting).tolist() == expected.tolist()


@pytest.mark.parametrize(
    "strategy, memory, topk, recency_weighting",
    [("topk", 4, 2, False), ("topk", 4, 2, True), ("topk", 3, 3, True), ("adjacent", 9, 3, False), ("longterm", 9, 3, False)],
)
def test_matches_direct_computation_on_noisy_video(strategy, memory, topk, recency_weighting):
    video = noisy_tracks(frames=12, queries=6, dim=8, noise=2.0, seed=4)
    expected = reference_match(video, strategy, memory, topk, recency_weighting)
    assert match_video(video, strategy, memory, topk, recency_weighting).tolist() == expected.tolist()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_incremental_form_equals_match_video(strategy):
    first = noisy_tracks(frames=10, queries=5, dim=8, noise=2.0, seed=5)
    second = noisy_tracks(frames=6, queries=5, dim=8, noise=2.0, seed=6)
    matcher = TemporalMatcher(strategy, memory=4, topk=2)
    for video in (first, second):
        matcher.reset()
        perms = torch.stack([matcher.step(frame) for frame in video])
        assert perms.dtype == torch.int64
        assert torch.equal(perms, match_video(video, strategy, memory=4, topk=2))


def test_adjacent_follows_the_last_frame_and_longterm_the_mean():
    # A drifts towards e2 and B towards e3 at frame 1. Frame 2 shows query 0 = B-look + much e2,
    # query 1 = A-look + much e3. The previous frame says "e2 is slot 0"; the mean of frames
    # 0 and 1 is still dominated by the frame-0 look ("e0 is slot 0").
    frame0 = torch.stack([unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
    frame1 = torch.stack([unit(1, 0, 1, 0), unit(0, 1, 0, 1)])
    frame2 = torch.stack([unit(0, 1, 1.5, 0), unit(1, 0, 0, 1.5)])
    video = torch.stack([frame0, frame1, frame2])
    assert match_video(video, "adjacent").tolist() == [[0, 1], [0, 1], [0, 1]]
    assert match_video(video, "longterm").tolist() == [[0, 1], [0, 1], [1, 0]]
    # The long-term mean is over raw embeddings: a tiny frame 0 hardly counts, leaving frame 1's look.
    video[0] *= 0.01
    assert match_video(video, "longterm").tolist() == [[0, 1], [0, 1], [0, 1]]
    assert match_video(video, "adjacent").tolist() == [[0, 1], [0, 1], [0, 1]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "nearest"}, "strategy must be one of topk, adjacent, longterm"),
        ({"topk": 0}, "topk must be an integer >= 1"),
        ({"memory": 0, "topk": 1}, "memory must be an integer >= 1"),
        ({"memory": 2, "topk": 3}, r"topk \(3\) must not exceed memory \(2\)"),
        ({"memory": 2.5}, "memory must be an integer"),
    ],
)
def test_invalid_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TemporalMatcher(**kwargs)
    with pytest.raises(ValueError, match=message):
        match_video(torch.ones(2, 3, 4), **kwargs)


def test_bad_shapes_are_rejected():
    matcher = TemporalMatcher()
    matcher.step(torch.randn(3, 4))
    with pytest.raises(ValueError, match="earlier frames had"):
        matcher.step(torch.randn(4, 4))
    with pytest.raises(ValueError, match=r"\(queries, dim\)"):
        matcher.step(torch.randn(3))
    with pytest.raises(ValueError, match="at least one frame"):
        match_video(torch.randn(0, 3, 4))
