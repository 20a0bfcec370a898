"""Temporal query matching: which query of each frame continues which track.

Frame 0's query order defines the track slots. For every later frame, a permutation
``perm`` puts the frame's query ``perm[j]`` into slot ``j``; the permuted ("aligned")
embeddings are then remembered for the next frames. Three strategies:

- ``topk`` (CLIP-VIS, paper §III-B): remember the last ``memory`` (T) aligned frames. For
  each remembered frame i, the cost map C_i = 1 - cos(current, memory_i) is solved with the
  Hungarian algorithm, giving a matched total S_i. The ``topk`` (K) frames with the smallest
  S_i are chosen, their cost maps averaged (Eq. 7) and the mean solved once more. While
  fewer than K frames are remembered, all of them are averaged.
  ``recency_weighting=True`` reproduces the authors' released code instead: the map of
  memory frame i (0 = oldest) is weighted by i + 1 before averaging (the selection still
  uses the unweighted S_i, and the mean divides by K), and while fewer than K frames are
  remembered the assignment of the single best frame is used as is.
- ``adjacent`` (MinVIS): match against the previous aligned frame only.
- ``longterm`` (OV2Seg): match against the running mean of the aligned embeddings of all
  previous frames, an OV2Seg-style memory-bank aggregate. The mean is over the raw
  (unnormalised) embeddings, so frames with larger embeddings weigh more.

Memory holds raw aligned embeddings; they are L2-normalised only when costs are computed.
Costs are built as slot x current matrices (the transpose of the paper's C_i), the form
the Hungarian solve takes. Ties in the top-K selection go to the older frame.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

STRATEGIES = ("topk", "adjacent", "longterm")


def check_matching_args(strategy: str, memory: int, topk: int) -> None:
    """Raise ValueError with a clear message if the matching settings are invalid."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    for name, value in (("memory", memory), ("topk", topk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if topk > memory:
        raise ValueError(f"topk ({topk}) must not exceed memory ({memory})")


def _solve(slot_costs: np.ndarray) -> tuple[np.ndarray, float]:
    """Hungarian on a (Q_slot, Q_cur) cost map -> (current query per slot, matched total cost)."""
    slots, current = linear_sum_assignment(slot_costs)
    return current, float(slot_costs[slots, current].sum())


class TemporalMatcher:
    """Incremental matcher: feed one frame's query embeddings at a time with ``step``.

    ``memory`` (T) and ``topk`` (K) are used by the ``topk`` strategy only (but checked for every strategy).
    """

    def __init__(self, strategy: str = "topk", memory: int = 9, topk: int = 3, recency_weighting: bool = False):
        check_matching_args(strategy, memory, topk)
        self.strategy = strategy
        self.memory = memory
        self.topk = topk
        self.recency_weighting = recency_weighting
        self.reset()

    def reset(self) -> None:
        """Forget all frames; the next ``step`` starts a new video."""
        # Raw aligned embeddings, oldest first, each (Q, D). For longterm: the one running mean.
        self._history: deque[torch.Tensor] = deque(maxlen=self.memory if self.strategy == "topk" else 1)
        self._frames_seen = 0

    def step(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Match one frame: embeddings (Q, D) -> perm (Q,) int64 on CPU; slot j takes query perm[j]."""
        current = embeddings.detach().to("cpu", torch.float32)
        if current.dim() != 2:
            raise ValueError(f"a frame's embeddings must be (queries, dim); got shape {tuple(current.shape)}")
        if not self._history:
            perm = torch.arange(current.shape[0])
        else:
            if current.shape != self._history[0].shape:
                raise ValueError(
                    f"frame has embeddings of shape {tuple(current.shape)}, "
                    f"earlier frames had {tuple(self._history[0].shape)}"
                )
            perm = torch.from_numpy(self._assign(self._slot_costs(current)).astype(np.int64))
        self._remember(current[perm])
        return perm

    def _slot_costs(self, current: torch.Tensor) -> np.ndarray:
        """current (Q, D) -> costs (M, Q_slot, Q_cur) = 1 - cos against every remembered frame."""
        references = F.normalize(torch.stack(tuple(self._history)), dim=-1)  # (M, Q, D)
        similarity = references @ F.normalize(current, dim=-1).T  # one batched matmul
        return 1.0 - similarity.numpy().astype(np.float64)  # numpy: no thread hand-off for tiny arrays

    def _assign(self, costs: np.ndarray) -> np.ndarray:
        """costs (M, Q_slot, Q_cur) -> current query index per slot (Q_slot,)."""
        if self.strategy != "topk":
            return _solve(costs[0])[0]
        solutions = [_solve(cost) for cost in costs]
        ranked = np.argsort([total for _, total in solutions], kind="stable")
        if self.recency_weighting:
            if len(costs) < self.topk:
                return solutions[ranked[0]][0]
            costs = costs * np.arange(1, len(costs) + 1)[:, None, None]
        return _solve(costs[ranked[: self.topk]].mean(axis=0))[0]

    def _remember(self, aligned: torch.Tensor) -> None:
        self._frames_seen += 1
        if self.strategy == "longterm" and self._history:
            mean = self._history[0]
            aligned = mean + (aligned - mean) / self._frames_seen
        self._history.append(aligned)


def match_video(
    embeddings: torch.Tensor,
    strategy: str = "topk",
    memory: int = 9,
    topk: int = 3,
    recency_weighting: bool = False,
) -> torch.Tensor:
    """Match a whole video: embeddings (F, Q, D) -> perm (F, Q) int64.

    ``perm[f][j]`` is the index of the frame-f query placed in track slot j; ``perm[0]`` is
    ``arange(Q)``. Same result as feeding the frames one by one to ``TemporalMatcher.step``.
    """
    if embeddings.dim() != 3 or embeddings.shape[0] == 0:
        raise ValueError(
            f"embeddings must be (frames, queries, dim) with at least one frame; got shape {tuple(embeddings.shape)}"
        )
    matcher = TemporalMatcher(strategy, memory, topk, recency_weighting)
    return torch.stack([matcher.step(frame) for frame in embeddings])
