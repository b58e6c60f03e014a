"""A resizable batch sampler for adaptive batch-size training (AdAdaGrad, batch ramp-ups).

Paper context: Lau, Liu, Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient
Methods", arXiv:2402.11215. The official code rebuilds its ``DataLoader`` whenever the batch size
changes, which restarts the workers and discards the rest of the epoch. Here the loader is built
once with ``batch_sampler=AdaptiveBatchSampler(...)`` and the trainer calls
:meth:`AdaptiveBatchSampler.set_batch_size`; the change applies from the next batch drawn.

Semantics:

* Each epoch is one permutation of ``range(data_len)`` (from a dedicated ``torch.Generator``
  seeded by ``(seed, epoch)``; ``shuffle=False`` keeps the order). Batches are consecutive slices
  of it, so **every example is drawn exactly once per epoch whatever the sequence of batch
  sizes**; the last batch of an epoch is short (``drop_last=False``) or dropped.
* ``iter(sampler)`` yields the rest of the current epoch (a finished epoch rolls over to the
  next), like any sampler used for one epoch per loop; ``infinite=True`` yields forever,
  rolling epochs, which suits a sample budget.
* ``state_dict()`` holds the epoch, cursor and batch size: a checkpoint resumes at the same
  place. With ``num_workers > 0`` the loader prefetches up to ``num_workers * prefetch_factor``
  batches, which were formed at the old size and are already past the cursor; use
  ``num_workers=0`` (cheap for in-memory data) when the batch size must change at the very next
  batch or a checkpoint must resume exactly.
* DDP: with ``num_replicas > 1`` every rank builds the same global batch (same ``seed``
  required) and takes the strided shard ``batch[rank::num_replicas]``; ``batch_size`` is the
  global batch size.

The batch-size statistics (mergeable count / sum / centred sum of squares, with an all-reduce for
DDP) and the tests live with the optimizer: ``optforge.optim.adadagrad.GradStats`` and
``AdaptiveBatchSize``. This module does not import them (methods are independent packages); the
sampler only needs the integer the controller returns.

Example::

    sampler = AdaptiveBatchSampler(len(dataset), batch_size=2, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    for x, y in loader:
        ...
        sampler.set_batch_size(new_size)   # e.g. optimizer.batch_size
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sized
from typing import Any

import torch
from torch.utils.data import Sampler

from optforge._core import check_positive_int, check_seed


class AdaptiveBatchSampler(Sampler[list[int]]):
    """A batch sampler whose batch size can change between batches without rebuilding a loader.

    Args:
        data_source: the data-set length, or a sized data set.
        batch_size: initial (global) batch size, clipped to the data-set length.
        shuffle: a fresh permutation every epoch (else the natural order).
        seed: seed of the permutations (default: derived from ``torch.initial_seed()``);
            required with ``num_replicas > 1`` so every rank draws the same batches.
        drop_last: drop an epoch's last batch when it is shorter than the batch size.
        infinite: yield forever, rolling over epochs.
        num_replicas: DDP sharding of each global batch: the number of ranks.
        rank: DDP sharding of each global batch: this rank.
    """

    def __init__(
        self,
        data_source: int | Sized,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        drop_last: bool = False,
        infinite: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        n = data_source if isinstance(data_source, int) else len(data_source)
        self.data_len = check_positive_int("data_source (length)", n)
        check_positive_int("num_replicas", num_replicas)
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an integer in [0, {num_replicas}), got {rank!r}")
        if num_replicas > 1 and seed is None:
            raise ValueError("seed is required with num_replicas > 1 (ranks must agree)")
        self.shuffle = bool(shuffle)
        self.seed = int(torch.initial_seed() if seed is None else check_seed("seed", seed)) % 2**63
        self.drop_last = bool(drop_last)
        self.infinite = bool(infinite)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self._batch_size = 0
        self.set_batch_size(batch_size)
        self.epoch = 0
        self.cursor = 0
        self.samples_seen = 0
        self._perm: list[int] | None = None
        self._perm_epoch = -1

    @property
    def batch_size(self) -> int:
        """The (global) size of the next batch."""
        return self._batch_size

    def set_batch_size(self, batch_size: int) -> None:
        """Use ``batch_size`` (clipped to the data-set length) from the next batch on."""
        b = check_positive_int("batch_size", batch_size)
        self._batch_size = min(b, self.data_len)

    def _permutation(self) -> list[int]:
        if self._perm is None or self._perm_epoch != self.epoch:
            if self.shuffle:
                mixed = self.seed * 6364136223846793005 + self.epoch * 1442695040888963407
                gen = torch.Generator().manual_seed(mixed % 2**63)
                self._perm = torch.randperm(self.data_len, generator=gen).tolist()
            else:
                self._perm = list(range(self.data_len))
            self._perm_epoch = self.epoch
        return self._perm

    def _exhausted(self) -> bool:
        left = self.data_len - self.cursor
        return left <= 0 or (self.drop_last and left < self._batch_size)

    def _next_epoch(self) -> None:
        self.epoch += 1
        self.cursor = 0

    def __iter__(self) -> Iterator[list[int]]:
        if self._exhausted():
            self._next_epoch()
        while True:
            while not self._exhausted():
                perm = self._permutation()
                batch = perm[self.cursor : self.cursor + self._batch_size]
                self.cursor += len(batch)
                self.samples_seen += len(batch)
                yield batch[self.rank :: self.num_replicas] if self.num_replicas > 1 else batch
            if not self.infinite:
                return
            self._next_epoch()

    def __len__(self) -> int:
        """Batches left in the current epoch at the current size (an ``infinite`` sampler has no
        length)."""
        if self.infinite:
            raise TypeError("an infinite AdaptiveBatchSampler has no length")
        left = self.data_len if self._exhausted() else self.data_len - self.cursor
        rounding = math.floor if self.drop_last else math.ceil
        return int(rounding(left / self._batch_size))

    def state_dict(self) -> dict[str, Any]:
        """Epoch, cursor, batch size, seed and samples seen (plain integers)."""
        return {
            "data_len": self.data_len,
            "batch_size": self._batch_size,
            "epoch": self.epoch,
            "cursor": self.cursor,
            "seed": self.seed,
            "samples_seen": self.samples_seen,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (the data-set length must match)."""
        if int(state["data_len"]) != self.data_len:
            raise ValueError(
                f"state: data_len {state['data_len']} does not match this sampler's {self.data_len}"
            )
        self._batch_size = int(state["batch_size"])
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])
        self.seed = int(state["seed"])
        self.samples_seen = int(state["samples_seen"])
        self._perm = None


ResizableBatchSampler = AdaptiveBatchSampler
"""Alias under the spec's name."""
