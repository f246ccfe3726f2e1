"""Deterministic, resumable samplers.

:class:`InfiniteSampler` defines one global stream of draws ``g = 0, 1, 2, ...``: draw ``g``
is element ``g % size`` of epoch ``g // size``'s permutation
``torch.randperm(size, generator=seeded(seed, epoch))`` and carries the sample seed
``sample_seed(seed, g)``. Rank ``r`` of ``world_size`` takes draws ``g = r + k * world_size``
(``k = start, start + 1, ...``), so ranks are disjoint, together cover the stream, and a run
resumed with ``start = iterations_done * per_rank_batch_size`` sees exactly the same data.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["mix_seed", "sample_seed", "seeded", "InfiniteSampler", "EvalSampler"]

_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """Hashes integers into a well-mixed seed in ``[0, 2**63)`` (SplitMix64 chain)."""
    h = 0x243F6A8885A308D3
    for v in values:
        h = _splitmix64(h ^ (int(v) & _M64))
    return h >> 1


def sample_seed(seed: int, draw: int) -> int:
    """Augmentation seed of global draw number ``draw`` of a stream seeded with ``seed``."""
    return mix_seed(seed, 1, draw)


def seeded(seed: int, epoch: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by ``(seed, epoch)``."""
    return torch.Generator().manual_seed(mix_seed(seed, 0, epoch))


class InfiniteSampler(Sampler):
    """Endless stream of ``(index, sample_seed)`` tuples for training.

    Args:
        size: Dataset length (> 0).
        seed: Stream seed (permutations and per-sample seeds derive from it).
        shuffle: Permute each epoch; if False, epochs run ``0..size-1`` in order.
        rank, world_size: This process' share: draws ``rank, rank + world_size, ...``.
        start: Number of this rank's draws to skip (resume point).
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, start: int = 0) -> None:
        if size <= 0:
            raise ValueError(f"InfiniteSampler needs a non-empty dataset (size={size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.size, self.seed, self.shuffle = int(size), int(seed), shuffle
        self.rank, self.world_size, self.start = rank, world_size, int(start)

    def permutation(self, epoch: int) -> torch.Tensor:
        """``int64 [size]`` order of epoch ``epoch``."""
        if not self.shuffle:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=seeded(self.seed, epoch))

    def draw(self, k: int) -> tuple[int, int]:
        """This rank's ``k``-th draw (random access, for tests and inspection)."""
        g = self.rank + k * self.world_size
        epoch, pos = divmod(g, self.size)
        return int(self.permutation(epoch)[pos]), sample_seed(self.seed, g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        k = self.start
        epoch, perm = -1, None
        while True:
            g = self.rank + k * self.world_size
            e, pos = divmod(g, self.size)
            if e != epoch:
                epoch, perm = e, self.permutation(e).tolist()
            yield perm[pos], sample_seed(self.seed, g)
            k += 1


class EvalSampler(Sampler):
    """Finite, ordered indices ``rank, rank + world_size, ...`` (no padding, no repeats).

    With ``world_size = 1`` this is ``0..size-1``. Ranks get disjoint shares covering the
    dataset exactly once, so dataset-level confusion matrices can be summed across ranks.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, world_size={world_size})")
        self.size, self.rank, self.world_size = int(size), rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))
