"""Infinite training samplers whose stream is a pure function of (seed, global sample number).

The global stream numbers samples 0, 1, 2, ... across all ranks; iteration i consumes the global
numbers [i * B, (i + 1) * B) with B = batch_size * world_size, and rank r takes those congruent to
r modulo world_size (as detectron2's samplers shard). Epoch e is ordered by a generator seeded
from (seed, e), and each sample gets its own seed from (seed, global number). A sampler built with
start_iter=k therefore yields exactly what an uninterrupted one yields from iteration k on, and a
DataLoader gives the same batches whatever its number of workers.

Samplers yield ``(dataset index, sample seed)`` pairs; datasets take them as keys.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch.utils.data

from clipvis.config import TrainConfig
from clipvis.data.augmentation import CONFIG_SOURCE
from clipvis.data.datasets import ImageInstanceDataset
from clipvis.errors import InputError

EPOCH_STREAM, SAMPLE_STREAM = 0, 1  # keep epoch generators and sample seeds apart


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, EPOCH_STREAM, epoch]))


def sample_seed(seed: int, global_number: int) -> int:
    """The seed of the sample at `global_number` in the stream (a 64-bit unsigned int)."""
    return int(np.random.SeedSequence([seed, SAMPLE_STREAM, global_number]).generate_state(1, np.uint64)[0])


class TrainingSampler(torch.utils.data.Sampler):
    """Every index once per epoch, in a fresh random order each epoch; infinite.

    batch_size is the number of samples per iteration on one rank.
    """

    def __init__(self, size: int, seed: int, batch_size: int, start_iter: int = 0, rank: int = 0,
                 world_size: int = 1):
        if size < 1:
            raise ValueError("cannot sample from an empty training set")
        if seed < 0:
            raise ValueError(f"seed must be 0 or more, got {seed}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if batch_size < 1 or start_iter < 0:
            raise ValueError(f"need batch_size >= 1 and start_iter >= 0, got {batch_size} and {start_iter}")
        self.size = size
        self.seed = seed
        self.batch_size = batch_size
        self.start_iter = start_iter
        self.rank = rank
        self.world_size = world_size

    def epoch_length(self, epoch: int) -> int:
        return self.size

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Dataset indices of epoch `epoch`, in order [epoch_length] int64."""
        return epoch_rng(self.seed, epoch).permutation(self.size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        number = self.start_iter * self.batch_size * self.world_size + self.rank  # global sample number
        epoch, epoch_start, length = 0, 0, self.epoch_length(0)
        while epoch_start + length <= number:  # skip whole epochs without ordering them
            epoch, epoch_start = epoch + 1, epoch_start + length
            length = self.epoch_length(epoch)
        while True:
            indices = self.epoch_indices(epoch)
            while number < epoch_start + len(indices):
                yield int(indices[number - epoch_start]), sample_seed(self.seed, number)
                number += self.world_size
            epoch_start += len(indices)
            epoch += 1


def repeat_factors_from_category_frequency(image_categories: Sequence[Iterable[int]], threshold: float) -> np.ndarray:
    """LVIS repeat factors [images] float64: r(c) = max(1, sqrt(threshold / f(c))) with f(c) the
    fraction of images that contain category c; an image repeats by the largest r(c) of its
    categories (1 if it has none)."""
    category_sets = [set(categories) for categories in image_categories]
    images_with: dict[int, int] = {}
    for categories in category_sets:
        for category in categories:
            images_with[category] = images_with.get(category, 0) + 1
    repeat = {category: max(1.0, math.sqrt(threshold * len(category_sets) / count))
              for category, count in images_with.items()}
    return np.array([max((repeat[c] for c in categories), default=1.0) for categories in category_sets])


class RepeatFactorTrainingSampler(TrainingSampler):
    """Each epoch, image i appears floor(r_i) times plus once more with probability frac(r_i),
    drawn with the epoch's generator, then the epoch is shuffled with it."""

    def __init__(self, repeat_factors: Sequence[float] | np.ndarray, seed: int, batch_size: int, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1):
        super().__init__(len(repeat_factors), seed, batch_size, start_iter, rank, world_size)
        factors = np.asarray(repeat_factors, dtype=np.float64)
        if not (factors >= 1).all():
            raise ValueError("repeat factors must be at least 1")
        self.whole = np.floor(factors).astype(np.int64)
        self.fraction = factors - self.whole

    def _repeats(self, rng: np.random.Generator) -> np.ndarray:
        return self.whole + (rng.random(self.size) < self.fraction)

    def epoch_length(self, epoch: int) -> int:
        return int(self._repeats(epoch_rng(self.seed, epoch)).sum())

    def epoch_indices(self, epoch: int) -> np.ndarray:
        rng = epoch_rng(self.seed, epoch)
        indices = np.repeat(np.arange(self.size), self._repeats(rng))
        return indices[rng.permutation(len(indices))]


def build_train_sampler(dataset: torch.utils.data.Dataset, train_cfg: TrainConfig, start_iter: int = 0, rank: int = 0,
                        world_size: int = 1) -> TrainingSampler:
    """The sampler of one rank. `train_cfg.batch_size` is the total over ranks (as IMS_PER_BATCH).

    Image datasets use repeat-factor sampling unless `repeat_factor_threshold` is null; video
    datasets always use the plain sampler (the reference video loader ignores RFS).
    """
    if train_cfg.batch_size < 1 or train_cfg.batch_size % world_size:
        raise InputError(CONFIG_SOURCE, "train.batch_size",
                         f"must be a positive multiple of the {world_size} ranks, got {train_cfg.batch_size}")
    if train_cfg.seed < 0:
        raise InputError(CONFIG_SOURCE, "train.seed", f"must be 0 or more, got {train_cfg.seed}")
    batch_size = train_cfg.batch_size // world_size
    threshold = train_cfg.repeat_factor_threshold
    if isinstance(dataset, ImageInstanceDataset) and threshold is not None:
        factors = repeat_factors_from_category_frequency(dataset.image_categories, threshold)
        return RepeatFactorTrainingSampler(factors, train_cfg.seed, batch_size, start_iter, rank, world_size)
    return TrainingSampler(len(dataset), train_cfg.seed, batch_size, start_iter, rank, world_size)
