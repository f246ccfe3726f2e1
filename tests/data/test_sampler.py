"""Samplers: epoch permutations, rank partition, exact resume, worker independence."""

from __future__ import annotations

from itertools import islice

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from segproto.data import EvalSampler, InfiniteSampler, mix_seed, sample_seed, seeded


def _take(sampler, n):
    return list(islice(iter(sampler), n))


def test_mix_seed_deterministic_and_in_range():
    assert mix_seed(1, 2) == mix_seed(1, 2)
    vals = {mix_seed(0, i) for i in range(1000)}
    assert len(vals) == 1000 and all(0 <= v < 2 ** 63 for v in vals)
    assert mix_seed(1, 2) != mix_seed(2, 1)


def test_epochs_follow_seeded_randperm():
    s = InfiniteSampler(7, seed=5)
    draws = _take(s, 21)
    for e in range(3):
        want = torch.randperm(7, generator=seeded(5, e)).tolist()
        assert [i for i, _ in draws[7 * e: 7 * e + 7]] == want
    assert [sd for _, sd in draws] == [sample_seed(5, g) for g in range(21)]
    assert [i for i, _ in _take(InfiniteSampler(4, seed=5, shuffle=False), 8)] == [0, 1, 2, 3] * 2
    assert _take(InfiniteSampler(7, seed=6), 7) != draws[:7]


@pytest.mark.parametrize("size, world", [(12, 3), (10, 3), (5, 2)])
def test_ranks_partition_the_global_stream(size, world):
    n = 4 * size
    glob = _take(InfiniteSampler(size, seed=1), n * world)
    per_rank = [_take(InfiniteSampler(size, seed=1, rank=r, world_size=world), n)
                for r in range(world)]
    # interleaving the ranks reconstructs the single-process stream: disjoint and covering
    interleaved = [per_rank[k % world][k // world] for k in range(n * world)]
    assert interleaved == glob
    seeds = [sd for r in per_rank for _, sd in r]
    assert len(set(seeds)) == len(seeds)
    if size % world == 0:  # each epoch is split exactly among the ranks
        first = sorted(i for r in per_rank for i, _ in r[: size // world])
        assert first == list(range(size))


def test_start_resumes_exactly():
    full = _take(InfiniteSampler(9, seed=3, rank=1, world_size=2), 40)
    for start in (0, 1, 4, 9, 23):
        resumed = _take(InfiniteSampler(9, seed=3, rank=1, world_size=2, start=start), 10)
        assert resumed == full[start:start + 10]
    s = InfiniteSampler(9, seed=3, rank=1, world_size=2)
    assert [s.draw(k) for k in range(40)] == full


class _Noisy(Dataset):
    """Returns data derived only from (index, seed)."""

    def __len__(self) -> int:
        return 13

    def __getitem__(self, item):
        i, seed = item
        g = torch.Generator().manual_seed(seed)
        return torch.tensor(float(i)), torch.rand(3, generator=g)


def test_dataloader_batches_independent_of_workers_and_resumable():
    def batches(workers, start=0, n=5):
        dl = DataLoader(_Noisy(), batch_size=4, num_workers=workers,
                        sampler=InfiniteSampler(13, seed=7, start=start))
        return [torch.cat([b[0][:, None], b[1]], 1) for b in islice(iter(dl), n)]

    ref = batches(0, n=8)
    for a, b in zip(batches(2), ref):
        assert torch.equal(a, b)
    for a, b in zip(batches(0, start=3 * 4), ref[3:]):  # resume after 3 iterations
        assert torch.equal(a, b)


def test_eval_sampler_shards_cover_once():
    shards = [list(EvalSampler(10, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))
    assert [len(EvalSampler(10, r, 3)) for r in range(3)] == [4, 3, 3]
    assert list(EvalSampler(4)) == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        EvalSampler(4, 3, 3)
    with pytest.raises(ValueError):
        InfiniteSampler(0, seed=0)
    with pytest.raises(ValueError):
        InfiniteSampler(3, seed=0, start=-1)
