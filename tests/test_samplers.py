import itertools
import math
from collections import Counter

import numpy as np
import pytest

from clipvis.data.samplers import (RepeatFactorTrainingSampler, TrainingSampler, repeat_factors_from_category_frequency,
                                   sample_seed)


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_each_epoch_is_a_permutation_and_epochs_differ():
    stream = take(TrainingSampler(7, seed=3, batch_size=2), 21)
    epochs = [[index for index, _ in stream[i:i + 7]] for i in (0, 7, 14)]
    assert all(sorted(epoch) == list(range(7)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1


def test_sample_seeds_follow_the_global_number():
    stream = take(TrainingSampler(5, seed=3, batch_size=2), 12)
    assert [seed for _, seed in stream] == [sample_seed(3, number) for number in range(12)]
    assert len({seed for _, seed in stream}) == 12
    assert take(TrainingSampler(5, seed=4, batch_size=2), 12) != stream


@pytest.mark.parametrize("start_iter", [1, 3, 7])
def test_resuming_at_an_iteration_gives_the_tail_of_the_stream(start_iter):
    full = take(TrainingSampler(5, seed=0, batch_size=3), 40)
    resumed = take(TrainingSampler(5, seed=0, batch_size=3, start_iter=start_iter), 40 - 3 * start_iter)
    assert resumed == full[3 * start_iter:]


def test_ranks_take_interleaved_disjoint_shares_of_the_global_stream():
    full = take(TrainingSampler(8, seed=1, batch_size=4), 16)
    rank0 = take(TrainingSampler(8, seed=1, batch_size=2, rank=0, world_size=2), 8)
    rank1 = take(TrainingSampler(8, seed=1, batch_size=2, rank=1, world_size=2), 8)
    assert rank0 == full[0::2] and rank1 == full[1::2]
    first_epoch = [index for index, _ in rank0[:4] + rank1[:4]]
    assert sorted(first_epoch) == list(range(8))  # disjoint, covering the epoch
    resumed = take(TrainingSampler(8, seed=1, batch_size=2, start_iter=2, rank=1, world_size=2), 4)
    assert resumed == rank1[4:]  # iteration 2 starts at global number 2 * 2 * 2 = 8


def test_repeat_factors_on_a_hand_computed_case():
    # 4 images; category 1 in 3 of them (f = 3/4), categories 2 and 3 in one each (f = 1/4)
    factors = repeat_factors_from_category_frequency([[1], [1, 2, 2], [1], [3]], threshold=1.0)
    r1, r2 = math.sqrt(1 / 0.75), math.sqrt(1 / 0.25)  # 1.1547, 2
    np.testing.assert_allclose(factors, [r1, r2, r1, r2])
    factors = repeat_factors_from_category_frequency([[1], [1, 2], [1], [3], []], threshold=0.1)
    np.testing.assert_allclose(factors, [1, 1, 1, 1, 1])  # every f(c) >= 0.2 > t; empty image: 1


def test_repeat_factor_sampler_rounds_stochastically_per_epoch():
    sampler = RepeatFactorTrainingSampler([1.0, 2.0, 1.5], seed=0, batch_size=1)
    extra = []
    for epoch in range(200):
        counts = Counter(sampler.epoch_indices(epoch).tolist())
        assert counts[0] == 1 and counts[1] == 2 and counts[2] in (1, 2)
        assert sampler.epoch_length(epoch) == sum(counts.values())
        extra.append(counts[2] - 1)
    assert 0.4 < np.mean(extra) < 0.6


def test_repeat_factor_sampler_resumes_across_uneven_epochs():
    factors = [1.0, 2.5, 1.3, 1.0, 3.7]
    full = take(RepeatFactorTrainingSampler(factors, seed=2, batch_size=2), 80)
    resumed = take(RepeatFactorTrainingSampler(factors, seed=2, batch_size=2, start_iter=13), 80 - 26)
    assert resumed == full[26:]
    rank1 = take(RepeatFactorTrainingSampler(factors, seed=2, batch_size=1, rank=1, world_size=2), 40)
    assert rank1 == full[1::2]
