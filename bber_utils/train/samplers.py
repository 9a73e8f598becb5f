"""Samplers: ``ShuffleSampler`` (a seeded permutation per epoch) and
``BalancedCorpusSampler`` for multi-corpus runs. Both take ``rank``/``world_size`` so that each DDP process reads
its own share of the same epoch order. The trainer uses ``RankBatchSampler`` over them: the epoch order cut into
global batches, each split across the ranks, so N processes take the single-process batches.

Owns: ``ShuffleSampler``, ``BalancedCorpusSampler``, ``RankBatchSampler``.
Imports from this package: ``dataset`` only. Must not import: the trainer's other modules (no torch at import time).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from bber_utils.train import dataset


class ShuffleSampler:
    """A seeded permutation of all samples per epoch; ``set_epoch`` picks the epoch. Each rank takes every
    ``world_size``-th index (the list is padded by wrap-around so that all ranks get the same count)."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.rank, self.world_size = int(n), int(seed), int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_indices(self) -> np.ndarray:
        return dataset._rng(self.seed, 104729, self.epoch).permutation(self.n)

    def _shard(self, idx: np.ndarray) -> np.ndarray:
        if self.world_size == 1:
            return idx
        total = math.ceil(len(idx) / self.world_size) * self.world_size
        idx = np.resize(idx, total)
        return idx[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard(self.epoch_indices()).tolist())

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)


class RankBatchSampler:
    """Distributed batches that add up to the single-process batches: the epoch order of ``sampler`` (built
    with ``rank=0, world_size=1``) is cut into global batches of ``batch_size``, and rank ``r`` takes positions
    ``r, r + world_size, ...`` of each. Every rank gets the same number of steps per epoch; when a (last) global
    batch has fewer samples than ranks, a rank with nothing takes a padding index ``-1 - i`` (served by
    ``PaddedDataset`` with a zero target, so it adds nothing to the loss). With ``world_size=1`` the batches
    are exactly ``DataLoader(batch_size=..., sampler=sampler)``'s.
    """

    def __init__(self, sampler: ShuffleSampler, batch_size: int, rank: int = 0, world_size: int = 1):
        if sampler.world_size != 1:
            raise ValueError("RankBatchSampler needs the whole epoch order: build its sampler with world_size=1")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.sampler, self.batch_size = sampler, int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.sampler.epoch_indices()
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            share = batch[self.rank::self.world_size].tolist()
            yield share if share else [-1 - int(batch[0])]


class BalancedCorpusSampler(ShuffleSampler):
    """Each corpus drawn equally often per epoch: an epoch has ``len(dataset)`` draws, ``len/K`` per corpus.

    Within a corpus the draws walk through seeded permutations of its samples (a new permutation each time
    one is used up), so a small corpus is repeated evenly and a large one is subsampled without repeats.
    The per-corpus draws are then shuffled together. Unlike the reference's WeightedRandomSampler (which gives
    50/50 in expectation only), the shares are exact. With one corpus this is a plain shuffle.
    """

    def __init__(self, corpora: list[str], seed: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__(len(corpora), seed, rank, world_size)
        names = sorted(set(corpora))
        arr = np.asarray(corpora)
        self.groups = {c: np.flatnonzero(arr == c) for c in names}

    def epoch_indices(self) -> np.ndarray:
        rng = dataset._rng(self.seed, 104729, self.epoch)
        k = len(self.groups)
        if k <= 1:
            return rng.permutation(self.n)
        per = [self.n // k + (1 if j < self.n % k else 0) for j in range(k)]
        draws = []
        for count, members in zip(per, self.groups.values()):
            reps = math.ceil(count / len(members))
            draws.append(np.concatenate([members[rng.permutation(len(members))] for _ in range(reps)])[:count])
        return rng.permutation(np.concatenate(draws))
