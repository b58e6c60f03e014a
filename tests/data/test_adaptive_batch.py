"""Tests of the resizable batch sampler (spec adadagrad.md §7.8)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from optforge.data import AdaptiveBatchSampler, ResizableBatchSampler


def _epoch_indices(sampler: AdaptiveBatchSampler, sizes: list[int]) -> list[list[int]]:
    """Draw one epoch, changing the batch size after each batch following ``sizes``."""
    batches = []
    for k, batch in enumerate(sampler):
        batches.append(batch)
        sampler.set_batch_size(sizes[k % len(sizes)])
    return batches


@pytest.mark.parametrize("sizes", [[1], [3, 7, 2], [50, 1, 13], [200]])
def test_each_example_once_per_epoch_whatever_the_resizes(sizes: list[int]) -> None:
    sampler = AdaptiveBatchSampler(37, 2, seed=0)
    for _ in range(3):
        batches = _epoch_indices(sampler, sizes)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(37))


def test_resize_takes_effect_at_the_next_batch_through_a_dataloader() -> None:
    data = TensorDataset(torch.arange(40).float())
    sampler = AdaptiveBatchSampler(len(data), 2, seed=1)
    loader = DataLoader(data, batch_sampler=sampler)
    sizes = []
    for k, (x,) in enumerate(loader):
        sizes.append(len(x))
        sampler.set_batch_size(2 + 2 * (k + 1))
    assert sizes == [2, 4, 6, 8, 10, 10]  # the last batch is short: 40 - 30 = 10 left
    assert sampler.samples_seen == 40


def test_deterministic_under_a_seed_and_reshuffles_each_epoch() -> None:
    def draw(seed: int) -> list[list[int]]:
        sampler = AdaptiveBatchSampler(20, 6, seed=seed, infinite=True)
        it = iter(sampler)
        return [next(it) for _ in range(12)]  # crosses several epoch boundaries

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    sampler = AdaptiveBatchSampler(20, 20, seed=3, infinite=True)
    it = iter(sampler)
    first, second = next(it), next(it)
    assert sorted(first) == sorted(second) == list(range(20)) and first != second
    ordered = AdaptiveBatchSampler(5, 2, shuffle=False)
    assert list(ordered) == [[0, 1], [2, 3], [4]]


def test_finite_iteration_is_one_epoch_and_the_next_iter_starts_a_new_one() -> None:
    sampler = AdaptiveBatchSampler(10, 4, seed=0, drop_last=True)
    assert len(sampler) == 2
    first = list(sampler)
    assert [len(b) for b in first] == [4, 4] and sampler.epoch == 0
    second = list(sampler)
    assert sampler.epoch == 1 and len(second) == 2 and first != second


def test_state_dict_resumes_at_the_same_cursor() -> None:
    sampler = AdaptiveBatchSampler(30, 3, seed=5, infinite=True)
    it = iter(sampler)
    for _ in range(4):
        next(it)
    sampler.set_batch_size(7)
    state = sampler.state_dict()
    rest = [next(it) for _ in range(6)]
    resumed = AdaptiveBatchSampler(30, 1, seed=0, infinite=True)
    resumed.load_state_dict(state)
    it2 = iter(resumed)
    assert [next(it2) for _ in range(6)] == rest
    with pytest.raises(ValueError, match="data_len"):
        AdaptiveBatchSampler(31, 2).load_state_dict(state)


def test_ddp_shards_partition_the_global_batch() -> None:
    shards = [AdaptiveBatchSampler(25, 5, seed=9, num_replicas=2, rank=r) for r in (0, 1)]
    for a, b in zip(shards[0], shards[1], strict=True):
        assert not set(a) & set(b)
    full = AdaptiveBatchSampler(25, 5, seed=9)
    shards = [AdaptiveBatchSampler(25, 5, seed=9, num_replicas=2, rank=r) for r in (0, 1)]
    for whole, a, b in zip(full, *shards, strict=True):
        assert sorted(a + b) == sorted(whole)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        AdaptiveBatchSampler(10, 0)
    with pytest.raises(ValueError, match="data_source"):
        AdaptiveBatchSampler(0, 2)
    with pytest.raises(ValueError, match="seed"):
        AdaptiveBatchSampler(10, 2, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank"):
        AdaptiveBatchSampler(10, 2, num_replicas=2, rank=2, seed=0)
    sampler = AdaptiveBatchSampler(10, 2, infinite=True)
    with pytest.raises(TypeError, match="infinite"):
        len(sampler)
    sampler.set_batch_size(100)
    assert sampler.batch_size == 10  # clipped to the data-set length
    assert ResizableBatchSampler is AdaptiveBatchSampler
