"""torch's stock batch samplers, drawn as int64 tensors instead of lists of Python ints.

``BatchSampler(RandomSampler(...))`` yields each index as a Python int, one generator step
at a time: about 80 ns a sample, which on a small machine is a good share of a core the
native gather's threads could use. For the stock samplers the batches are slices of one
``randperm`` (or ``arange``; a ``DistributedSampler``'s are its padded and strided share of
one), so they are handed over here as tensor slices, which the C++ gather reads directly.

The generator draws are those torch makes, at the same moments: ``RandomSampler`` draws
its seed (without a generator of its own) and each ``randperm`` when the first index of
that permutation is asked for, and its last ``randperm`` (cut to ``num_samples % n``) when
the index after the full permutations is asked for, even when none of it is used.
``BatchSampler`` asks for indices one at a time, up to ``batch_size`` a batch, and a
batch that comes out short ends the iteration (dropped with ``drop_last``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, SequentialSampler


def stock_batches(index_sampler: Any) -> StockBatches | None:
    """The batches of a stock ``BatchSampler`` over a ``SequentialSampler``, a
    ``RandomSampler`` without replacement or a ``DistributedSampler``, as int64 tensors;
    None for any other."""
    if type(index_sampler) is not BatchSampler:
        return None
    sampler = index_sampler.sampler
    if type(sampler) is SequentialSampler:
        return StockBatches(index_sampler, draws=False)
    if type(sampler) is RandomSampler and not sampler.replacement and len(sampler.data_source):
        return StockBatches(index_sampler, draws=True)
    if type(sampler) is DistributedSampler:  # its generator is its own, made anew each epoch
        return StockBatches(index_sampler, draws=False)
    return None


class StockBatches:
    """An iterator over the batches, reading the samplers' settings when the first batch
    is asked for, as torch's generator functions do."""

    def __init__(self, index_sampler: BatchSampler, draws: bool) -> None:
        self._index_sampler = index_sampler
        self._draws = draws
        self._source: _Indices | None = None
        self._batch_size = 0
        self._drop_last = False
        self._ended = False

    def __iter__(self) -> StockBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self._ended:
            raise StopIteration
        if self._source is None:
            self._source = self._start()
        batch = self._source.take(self._batch_size)
        size = batch.shape[0]  # (len() of a tensor costs a Python call into torch)
        if size < self._batch_size:  # the indices ran out: the last batch, if any
            self._ended = True
            if self._drop_last or size == 0:
                raise StopIteration
        return batch

    def draws_next(self) -> bool:
        """Whether asking for the next batch draws from a generator (the seed, or a
        permutation): a loader without workers asks for it only when it is needed, as
        torch does, so that the generator moves at the same moment."""
        if self._ended:
            return False
        if self._source is None:
            return self._draws
        return self._source.draws_within(self._batch_size)

    def _start(self) -> _Indices:
        batches = self._index_sampler
        self._batch_size, self._drop_last = batches.batch_size, batches.drop_last
        sampler = batches.sampler
        if type(sampler) is DistributedSampler:
            return _Fixed(_rank_indices(sampler))
        n = len(sampler.data_source)
        if not self._draws:
            return _Sequential(n)
        return _Permutations(n, sampler.num_samples, sampler.generator)


class _Indices:
    def take(self, k: int) -> torch.Tensor:
        """The next (up to) k indices, asked for one by one as BatchSampler asks."""
        raise NotImplementedError

    def draws_within(self, k: int) -> bool:
        """Whether asking for the next k indices draws from a generator."""
        return False


class _Sequential(_Indices):
    def __init__(self, n: int) -> None:
        self._n = n
        self._next = 0

    def take(self, k: int) -> torch.Tensor:
        out = torch.arange(self._next, min(self._next + k, self._n), dtype=torch.int64)
        self._next += len(out)
        return out


class _Fixed(_Indices):
    def __init__(self, indices: torch.Tensor) -> None:
        self._all = indices
        self._next = 0

    def take(self, k: int) -> torch.Tensor:
        out = self._all[self._next : self._next + k]
        self._next += len(out)
        return out


def _rank_indices(s: DistributedSampler) -> torch.Tensor:
    """The indices DistributedSampler.__iter__ gives this rank, as a tensor."""
    n = len(s.dataset)
    if s.shuffle:
        g = torch.Generator()
        g.manual_seed(s.seed + s.epoch)
        indices = torch.randperm(n, generator=g)
    else:
        indices = torch.arange(n, dtype=torch.int64)
    if not s.drop_last:  # padded with its own start (as torch slices lists, even when
        padding = s.total_size - n  # the dataset grew since and padding < 0)
        if padding <= n:
            indices = torch.cat([indices, indices[:padding]])
        else:
            indices = torch.cat([indices, indices.repeat(math.ceil(padding / n))[:padding]])
    else:
        indices = indices[: s.total_size]
    if len(indices) != s.total_size:
        raise AssertionError(
            f"Number of indices ({len(indices)}) does not match total_size ({s.total_size})"
        )
    indices = indices[s.rank : s.total_size : s.num_replicas]
    if len(indices) != s.num_samples:
        raise AssertionError(
            f"Number of subsampled indices ({len(indices)}) does not match num_samples "
            f"({s.num_samples})"
        )
    return indices


class _Permutations(_Indices):
    """RandomSampler(replacement=False): ``num_samples // n`` full permutations of n,
    then one more cut to ``num_samples % n``."""

    def __init__(self, n: int, num_samples: int, generator: torch.Generator | None) -> None:
        self._n = n
        self._full, self._rest = divmod(num_samples, n)
        self._given = generator
        self._generator: torch.Generator | None = None
        self._made = 0  # permutations made so far
        self._perm = torch.empty(0, dtype=torch.int64)  # the last one, and where we are in it
        self._size = 0  # its length
        self._at = 0
        self._ended = False

    def draws_within(self, k: int) -> bool:
        return not self._ended and self._size - self._at < k and self._made <= self._full

    def _make_next(self) -> None:
        if self._generator is None:
            if self._given is None:  # as torch: a seed from the global generator
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
                self._generator = torch.Generator()
                self._generator.manual_seed(seed)
            else:
                self._generator = self._given
        perm = torch.randperm(self._n, generator=self._generator)
        self._made += 1
        self._perm = perm if self._made <= self._full else perm[: self._rest]
        self._size = self._perm.shape[0]
        self._at = 0

    def take(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0 and not self._ended:
            if self._at == self._size:  # the next index is asked for
                if self._made > self._full:
                    self._ended = True
                    break
                self._make_next()
                continue
            end = min(self._at + k, self._size)
            parts.append(self._perm[self._at : end])
            k -= end - self._at
            self._at = end
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
