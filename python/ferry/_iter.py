"""ferry's iterators: what every path shares, and the one iterator over producers.

A batch's way: the sampler's indices are drawn in the main thread (as torch draws them),
a producer makes the batch from them, and the iterator hands it over: pinned, or on the
device, and counted in the loader's statistics.

`ProducerIter` is what every ferry iterator is: the one iterator over a `Producer`. It
draws indices ahead, keeps the batches in flight to a depth, hands them over in order (or
as they complete), raises torch's timeout, pins, delivers to the device (`device=`)
through one route (the staged copy of `DeviceCopier`: page-locked slots, ferry's copy
stream), is resumable (`Resumable`) and measured (`loader.stats()`). The producers: the
native gather (_native.py), worker processes (_workers.py: torch's worker loop in each,
asked for batches as torch's multiprocessing iterator asks), worker threads
(_threads.py), the image pipeline (_images.py) and, without workers, torch's own fetch
(dataloader.py).
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from . import _ext
from ._errors import timed_out
from ._resume import Resumable
from ._sampling import stock_batches
from ._stats import StatsRecorder
from ._torch_compat import _BaseDataLoaderIter, _DatasetKind, _profiler_enabled, pin_memory

# Page-locked slots of the staged copy: copies still running when a batch is handed over
# keep theirs, so a few cover a consumer that runs ahead of the device.
_STAGING_SLOTS = 4


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(slots=True)
class Done:
    """A batch a producer finished, with what the iterator records of it."""

    data: Any
    task: int  # which batch of the epoch, counting from 0 in submission order
    produce_s: float | None = None
    fetch_s: float | None = None
    collate_s: float | None = None
    transfer_s: float | None = None
    pinned: bool = False  # made in page-locked memory
    on_device: bool = False  # made on the iterator's device


# What a producer's take() may return besides a batch: a worker whose IterableDataset ran
# out (the iterator draws, as torch sends another index then, and takes again), and no
# batch left to come (only tasks no worker will answer are in flight).
WORKER_ENDED: Any = object()
NONE_LEFT: Any = object()


class Producer(Protocol):
    """Makes batches from sampler indices, on its own threads or processes. It holds no
    reference to its iterator (the iterator's `del` stops the producer, not the garbage
    collector)."""

    path: str  # what the loader's stats() and the iterator's `path` call it
    # set by the iterator: the indices are the stock samplers' int64 tensors (_sampling)
    stock_indices: bool

    @property
    def in_flight(self) -> int:
        """Batches submitted and not taken yet (the iterator keeps it at its depth)."""

    def submit(self, task: int, index: Any, position: int) -> bool:
        """Starts batch `task` of the epoch (`position`: its place in the sampler's
        stream, which is not `task` in a resumed epoch); False: not taken (no worker is
        asked for more), and the index is dropped."""

    def take(self, timeout: float | None) -> Done | None:
        """The next batch (the oldest in order, or the first finished); None when
        `timeout` passed first; WORKER_ENDED; NONE_LEFT. Raises the batch's own error."""

    def late(self) -> str:
        """Where the batch that timed out is, to follow torch's timeout sentence."""

    def drop(self, shared_seed: int | None) -> None:
        """Forgets the batches in flight: a persistent iterator begins an epoch
        (`shared_seed`: the epoch's seed shared by the workers, torch's, for DataPipes)."""

    def close(self) -> None:
        """Stops the producer's threads and processes; idempotent."""


def _past_len(it: Any) -> str:
    """torch's warning for an IterableDataset that yields more than its len() said."""
    text = (f"Length of IterableDataset {it._dataset} was reported to be "
            f"{it._IterableDataset_len_called}(when accessing len(dataloader)), but "
            f"{it._num_yielded} samples have been fetched. ")
    if it._num_workers > 0:
        text += ("For multiprocessing data-loading, this could be caused by not properly "
                 "configuring the IterableDataset replica at each worker. Please see "
                 "https://pytorch.org/docs/stable/data.html#torch.utils.data.IterableDataset "
                 "for examples.")
    return text


class _PlainNext:
    """torch's next() of its iterators, less its profiler label and its warning about an
    IterableDataset's len() (ProducerIter.__next__ says them, from the user's call)."""

    def __next__(self) -> Any:
        data = self._next_data()  # type: ignore[attr-defined]
        self._num_yielded += 1  # type: ignore[attr-defined]
        return data


class ProducerIter(Resumable, _PlainNext, _BaseDataLoaderIter):
    """What every ferry iterator is: the one iterator over a producer, resumable
    (`Resumable`), measured (`loader.stats()`) and delivering to the device (`device=`).

    Indices come from the loader's own sampler in the main thread, exactly as torch
    draws them (torch's base iterator draws the base seed first). With workers, up to
    `depth` batches are in flight and the next indices are drawn as each batch (or a
    worker's end) is taken in, as torch's worker iterator does; without workers a batch
    is drawn when next() asks for it, except that the stock samplers (`stock=True`,
    drawn as index tensors by _sampling) are drawn ahead up to the draw that would move
    their generator. Batches not made on the device go there through one route, the
    staged copy (page-locked slots, ferry's copy stream) of `DeviceCopier`.
    """

    # the last batch's producer time, its fetch and collate parts (worker paths) and its
    # transfer (with a device): the statistics read them as it is handed over
    last_produce_s: float | None = None
    last_fetch_s: float | None = None
    last_collate_s: float | None = None
    last_transfer_s: float | None = None
    _on_device = False  # the batch _next_data returned is on the device already
    _recorder: StatsRecorder | None = None  # the loader's, set once the iterator is made
    _device: torch.device | None = None  # a CUDA device (not "cpu")
    _copier: DeviceCopier | None = None  # with a device: the staged copy

    def __init__(self, loader: Any, make_producer: Any, depth: int, budget: Any,
                 stock: bool = False) -> None:
        self._init_resume(loader)
        super().__init__(loader)
        device = loader.device
        self._device = device if device is not None and device.type != "cpu" else None
        self._budget = budget  # counts (and may limit) the page-locked memory
        if self._device is not None:
            self._copier = DeviceCopier(self._device, _STAGING_SLOTS, budget)
        self._depth = max(1, depth)
        self._in_order = loader.in_order or self._num_workers == 0
        self._stock = stock  # the stock batch samplers are drawn as index tensors
        self._sampler_done = False
        self._tasks = 0  # batches submitted in this epoch
        self._producer: Producer = make_producer(self)
        self.path = self._producer.path
        # a producer's workers' states (processes, the image path's), for state_dict
        self._worker_states = getattr(self._producer, "worker_states", None)
        if self._num_workers > 0:
            # As torch's worker iterator, whose constructor ends with _reset: the sampler
            # is iterated a second time (one that draws when iterated draws twice), and
            # read ahead.
            self._reset(loader, first_iter=True)
        else:
            self._use_stock_batches()

    def __next__(self) -> Any:
        started = time.perf_counter()
        try:
            if _profiler_enabled():  # torch's label of each next(), ~6 us: only then
                with torch.autograd.profiler.record_function(self._profile_name):
                    data = super().__next__()  # Resumable's: the epoch's bookkeeping
            else:
                data = super().__next__()
        except StopIteration:
            if self._recorder is not None:
                self._recorder.epoch_ended()
            raise
        if (self._dataset_kind == _DatasetKind.Iterable
                and self._IterableDataset_len_called is not None
                and self._num_yielded > self._IterableDataset_len_called):
            warnings.warn(_past_len(self), stacklevel=2)
        if self._copier is not None and not self._on_device:
            moved = time.perf_counter()
            data = self._copier(data)
            self.last_transfer_s = time.perf_counter() - moved
        recorder = self._recorder
        if recorder is not None:
            recorder.record(started, time.perf_counter(), self.last_produce_s,
                            self.last_fetch_s, self.last_collate_s, self.last_transfer_s)
        return data

    def _use_stock_batches(self) -> None:
        """torch's stock batch samplers as int64 tensors, with the same generator draws
        (see _sampling); any other sampler keeps the iterator torch made (a second iter()
        could draw from a generator)."""
        stock = stock_batches(self._index_sampler) if self._stock else None
        self._producer.stock_indices = stock is not None
        if stock is not None:
            self._sampler_iter = stock

    def _refill(self) -> None:
        producer = self._producer
        while not self._sampler_done and producer.in_flight < self._depth:
            if (self._num_workers == 0 and producer.in_flight and producer.stock_indices
                    and self._sampler_iter.draws_next()):
                break  # as torch without workers: the generator moves when this batch is due
            try:
                index = self._next_index()
            except StopIteration:
                self._sampler_done = True
                break
            assert self._epoch is not None
            if not producer.submit(self._tasks, index, self._epoch.drawn_position()):
                break  # no worker is asked now: torch drops the index it drew
            self._tasks += 1

    def _next_data(self) -> Any:
        producer = self._producer
        timeout = self._timeout if self._timeout > 0 else None
        while True:
            self._refill()
            try:
                done = producer.take(timeout) if producer.in_flight else NONE_LEFT
            except Exception:  # the batch's own error (a StopIteration too, as torch's)
                if self._num_workers > 0:
                    # torch's worker iterator draws the next batch's indices as it takes
                    # one in (or a worker's end), before it raises its error or hands it
                    # over
                    self._refill()
                raise
            if done is NONE_LEFT:
                if not self._persistent_workers:
                    self._close_producer()
                raise StopIteration
            if self._num_workers > 0:
                self._refill()
            if done is not WORKER_ENDED:
                break
        if done is None:
            raise RuntimeError(timed_out(self._timeout) + producer.late())
        if not self._in_order:
            self._yielded_task = done.task
        self.last_produce_s, self.last_fetch_s = done.produce_s, done.fetch_s
        self.last_collate_s, self.last_transfer_s = done.collate_s, done.transfer_s
        self._on_device = done.on_device
        data = done.data
        if self._pin_memory and self._device is None and not done.pinned:
            data = pin_memory(data, self._pin_memory_device)
        return data

    def _reset(self, loader: Any, first_iter: bool = False) -> None:
        if self._recorder is not None:
            self._recorder.epoch_ended()
        super()._reset(loader, first_iter)
        self._use_stock_batches()
        if not first_iter:
            self._producer.drop(self._shared_seed)  # what the last epoch left in flight
        self._sampler_done = False
        self._tasks = 0
        if self._num_workers > 0:
            self._refill()

    def _close_producer(self) -> None:
        producer = getattr(self, "_producer", None)  # absent when __init__ failed
        if producer is not None:
            producer.close()

    def __del__(self) -> None:
        self._close_producer()
        super().__del__()  # Resumable's


# --- the device route -----------------------------------------------------------------
def map_tensors(data: Any, fn: Any) -> Any:
    """`data` with its tensors replaced by ``fn(list of all its tensors)`` (a list in the
    same order), rebuilt the way torch's pin_memory rebuilds a batch: mappings and
    sequences keep their types where they can, namedtuples stay namedtuples, strings and
    other objects are left as they are."""
    tensors: list[torch.Tensor] = []
    _collect(data, tensors)
    if not tensors:
        return data
    new = iter(fn(tensors))
    return _rebuild(data, lambda _: next(new))


def _collect(data: Any, out: list[torch.Tensor]) -> None:
    if isinstance(data, torch.Tensor):
        out.append(data)
    elif isinstance(data, (str, bytes)):
        return
    elif isinstance(data, Mapping):
        for v in data.values():
            _collect(v, out)
    elif isinstance(data, (tuple, Sequence)):
        for v in data:
            _collect(v, out)


def _rebuild(data: Any, leaf: Any) -> Any:
    if isinstance(data, torch.Tensor):
        return leaf(data)
    if isinstance(data, (str, bytes)):
        return data
    if isinstance(data, Mapping):
        items = {k: _rebuild(v, leaf) for k, v in data.items()}
        try:
            if isinstance(data, MutableMapping):  # may carry more than its items
                clone = copy.copy(data)
                clone.update(items)
                return clone
            return type(data)(items)
        except TypeError:  # no copy/update, or no constructor from a dict
            return items
    if isinstance(data, tuple):
        parts = [_rebuild(v, leaf) for v in data]
        return type(data)(*parts) if hasattr(data, "_fields") else type(data)(parts)
    if isinstance(data, Sequence):
        parts = [_rebuild(v, leaf) for v in data]
        try:
            if isinstance(data, MutableSequence):
                clone = copy.copy(data)
                for i, part in enumerate(parts):
                    clone[i] = part
                return clone
            return type(data)(parts)
        except TypeError:  # range and the like
            return parts
    return data


class DeviceCopier:
    """Moves whole batches to a CUDA device for the batches that arrive in ordinary
    memory (every path but the native gather's own): in C++, without the GIL, through
    reused page-locked slots and a copy stream; the consumer's stream waits for the copy
    without blocking the host. Other tensors (already on a device, sparse) move as torch
    moves them."""

    def __init__(self, device: torch.device, slots: int, budget: Any = None) -> None:
        self.staged = _ext.load().StagedCopy(device, slots, budget)
        self._device = device

    def __call__(self, data: Any) -> Any:
        return map_tensors(data, self._move)

    def _move(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        stage = [_stageable(t) for t in tensors]
        out = [t if s else t.to(self._device, non_blocking=True)
               for t, s in zip(tensors, stage, strict=True)]
        host = [i for i, s in enumerate(stage) if s]
        staged = self.staged.to_device([tensors[i] for i in host])
        for i, t in zip(host, staged, strict=True):
            out[i] = t
        return out


def _stageable(t: torch.Tensor) -> bool:
    return (
        type(t) is torch.Tensor
        and t.device.type == "cpu"
        and t.layout == torch.strided
        and not t.requires_grad
    )
