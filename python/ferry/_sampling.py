"""torch's stock batch samplers, drawn as int64 tensors instead of lists of Python ints.

``BatchSampler(RandomSampler(...))`` yields each index as a Python int, one generator step
at a time: about 80 ns a sample, which on a small machine is a good share of a core the
native gather's threads could use. For the stock samplers the batches are slices of one
``randperm`` (or ``arange``), so they are handed over here as tensor slices, which the C++
gather reads directly.

The generator draws are those torch makes, at the same moments: ``RandomSampler`` draws
its seed (without a generator of its own) and each ``randperm`` when the first index of
that permutation is asked for, and its last ``randperm`` (cut to ``num_samples % n``) when
the index after the full permutations is asked for, even when none of it is used.
``BatchSampler`` asks for indices one at a time, up to ``batch_size`` a batch, and a
batch that comes out short ends the iteration (dropped with ``drop_last``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler


def stock_batches(index_sampler: Any) -> Iterator[torch.Tensor] | None:
    """The batches of a stock ``BatchSampler`` over a ``SequentialSampler`` or a
    ``RandomSampler`` without replacement, as int64 tensors; None for any other."""
    if type(index_sampler) is not BatchSampler:
        return None
    sampler = index_sampler.sampler
    batch_size, drop_last = index_sampler.batch_size, index_sampler.drop_last
    if type(sampler) is SequentialSampler:
        source: _Indices = _Sequential(len(sampler.data_source))
    elif type(sampler) is RandomSampler and not sampler.replacement:
        n = len(sampler.data_source)
        if n <= 0:  # torch's own iteration raises its error
            return None
        source = _Permutations(n, sampler.num_samples, sampler.generator)
    else:
        return None
    return _batches(source, batch_size, drop_last)


def _batches(source: _Indices, batch_size: int, drop_last: bool) -> Iterator[torch.Tensor]:
    while True:
        batch = source.take(batch_size)
        if len(batch) < batch_size and (drop_last or len(batch) == 0):
            return
        yield batch
        if len(batch) < batch_size:
            return


class _Indices:
    def take(self, k: int) -> torch.Tensor:
        """The next (up to) k indices, asked for one by one as BatchSampler asks."""
        raise NotImplementedError


class _Sequential(_Indices):
    def __init__(self, n: int) -> None:
        self._all = torch.arange(n, dtype=torch.int64)
        self._next = 0

    def take(self, k: int) -> torch.Tensor:
        out = self._all[self._next : self._next + k]
        self._next += len(out)
        return out


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
        self._at = 0
        self._ended = False

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
        self._at = 0

    def take(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0 and not self._ended:
            if self._at == len(self._perm):  # the next index is asked for
                if self._made > self._full:
                    self._ended = True
                    break
                self._make_next()
                continue
            part = self._perm[self._at : self._at + k]
            self._at += len(part)
            k -= len(part)
            parts.append(part)
        if len(parts) == 1:
            return parts[0]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)
