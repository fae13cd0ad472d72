"""The native gather path: array-backed datasets read by C++ threads, no Python per sample.

A dataset qualifies when it is a TensorDataset or ArrayDataset (or a Subset /
ConcatDataset of these, nested freely) whose item access is the stock one, and every
leaf has the same columns (dtype and row shape). `build_plan` compiles such a dataset to
an index plan plus raw array descriptions; anything else returns None and takes torch's
path.
"""

from __future__ import annotations

import copy
import itertools
import os
import weakref
from collections.abc import Mapping, MutableMapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    ConcatDataset,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

from . import _ext
from ._resume import Resumable
from ._sampling import stock_batches
from ._torch_compat import _BaseDataLoaderIter, _MapDatasetFetcher, pin_memory
from .datasets import ArrayDataset, torch_dtype_of

# (data_ptr, shape, byte_strides, itemsize), as the C++ StridedArray takes it
ArraySpec = tuple[int, list[int], list[int], int]
Column = tuple[torch.dtype, list[int]]


@dataclass
class NativePlan:
    index_plan: Any  # ferry._C.IndexPlan
    leaves: list[list[ArraySpec]] = field(default_factory=list)
    columns: list[Column] | None = None
    owners: list[Any] = field(default_factory=list)  # keep the arrays' memory alive


def _uses_stock_item_access(ds: Dataset, base: type) -> bool:
    cls = type(ds)
    return (
        isinstance(ds, base)
        and cls.__getitem__ is base.__getitem__
        and getattr(cls, "__getitems__", None) is getattr(base, "__getitems__", None)
        and cls.__len__ is base.__len__
    )


def _tensor_column(t: torch.Tensor) -> tuple[ArraySpec, Column] | None:
    if (
        type(t) is not torch.Tensor  # a subclass: torch's batches keep its type
        or t.device.type != "cpu"
        or t.layout != torch.strided
        or t.requires_grad
        or t.is_conj()
        or t.is_neg()
        or t.is_quantized
        or t.dim() == 0
    ):
        return None
    size = t.element_size()
    spec = (t.data_ptr(), list(t.shape), [s * size for s in t.stride()], size)
    return spec, (t.dtype, list(t.shape[1:]))


def _numpy_column(a: np.ndarray) -> tuple[ArraySpec, Column] | None:
    try:
        dtype = torch_dtype_of(a.dtype)
    except TypeError:
        return None
    if a.ndim == 0:
        return None
    spec = (a.__array_interface__["data"][0], list(a.shape), list(a.strides), a.itemsize)
    return spec, (dtype, list(a.shape[1:]))


def _as_index_list(indices: Any) -> list[int] | None:
    if isinstance(indices, range):
        return list(indices)
    if isinstance(indices, torch.Tensor):
        ok = indices.dim() == 1 and not indices.is_floating_point() and indices.dtype != torch.bool
        return indices.tolist() if ok else None
    if isinstance(indices, np.ndarray):
        return indices.tolist() if indices.ndim == 1 and indices.dtype.kind in "iu" else None
    try:
        out = list(indices)
    except TypeError:
        return None
    if all(type(i) is int for i in out):
        return out
    return None


def build_plan(dataset: Dataset) -> NativePlan | None:
    """Compiles `dataset` for the native gather, or None when it does not qualify."""
    C = _ext.load()
    plan = NativePlan(C.IndexPlan())

    def visit(ds: Dataset) -> int | None:
        if _uses_stock_item_access(ds, TensorDataset) or _uses_stock_item_access(ds, ArrayDataset):
            arrays = ds.tensors if isinstance(ds, TensorDataset) else ds.arrays
            if any(a.ndim == 0 for a in arrays):
                return None
            specs, cols = [], []
            for a in arrays:
                if a.shape[0] != len(ds):  # torch raises its IndexError past the shortest
                    return None
                made = _tensor_column(a) if isinstance(a, torch.Tensor) else _numpy_column(a)
                if made is None:
                    return None
                specs.append(made[0])
                cols.append(made[1])
            if plan.columns is None:
                plan.columns = cols
            elif plan.columns != cols:
                return None  # leaves differ in dtype or row shape: torch decides per batch
            plan.leaves.append(specs)
            plan.owners.append(arrays)
            return plan.index_plan.add_leaf(len(plan.leaves) - 1, len(ds))
        if _uses_stock_item_access(ds, Subset):
            child = visit(ds.dataset)
            indices = _as_index_list(ds.indices) if child is not None else None
            if indices is None:
                return None
            return plan.index_plan.add_subset(child, indices)
        if _uses_stock_item_access(ds, ConcatDataset):
            # torch maps indices with the sizes stored when the ConcatDataset was made;
            # a child that has grown or shrunk since is left to torch.
            if list(ds.cumulative_sizes) != list(itertools.accumulate(map(len, ds.datasets))):
                return None
            children = [visit(d) for d in ds.datasets]
            if any(c is None for c in children):
                return None
            return plan.index_plan.add_concat(children)
        return None

    return plan if visit(dataset) is not None else None


# Samplers whose indices depend only on their own state and generator: drawing them a few
# batches ahead of the consumer gives the same indices as drawing them on demand.
_STOCK_SAMPLERS = (
    SequentialSampler,
    RandomSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
    DistributedSampler,
)


def may_draw_ahead(index_sampler: Any) -> bool:
    """Whether the sampler can be run ahead of the consumer without changing its indices
    or when its generator moves (a sampler reading the global RNG or the training loop's
    state cannot; RandomSampler with replacement draws from its generator every 32
    indices). RandomSampler without replacement is drawn ahead by batches that do not
    reach its next permutation (see _refill)."""
    sampler = index_sampler.sampler if type(index_sampler) is BatchSampler else index_sampler
    if type(sampler) is RandomSampler and sampler.replacement and sampler.generator is not None:
        return False
    return type(sampler) in _STOCK_SAMPLERS


def default_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


class NativeIter(Resumable, _BaseDataLoaderIter):
    """Iterates a DataLoader whose dataset compiled to a NativePlan.

    Indices come from the loader's own sampler in the main thread, exactly as torch
    draws them (torch's base iterator draws the base seed first); C++ threads gather up
    to `prefetch_factor x threads` batches ahead (one at a time without workers unless
    the sampler is a stock one). A batch torch would reject (an index out of range) is
    re-fetched through torch's own fetcher, so the error is torch's.
    """

    path = "native"
    last_produce_s: float | None = None  # the C++ gather time of the last batch
    last_transfer_s: float | None = None  # the C++ time to start its device copy

    def __init__(self, loader: Any, plan: NativePlan, device: torch.device | None,
                 budget: Any = None) -> None:
        self._init_resume(loader)
        super().__init__(loader)
        C = _ext.load()
        threads = loader.num_workers or default_threads()
        self._depth = max(1, (loader.prefetch_factor or 2) * threads)
        if loader.num_workers == 0 and not may_draw_ahead(self._index_sampler):
            self._depth = 1  # torch without workers draws each batch when it is asked for
        # Batches for a (CUDA) device are copied by the gather threads: a side stream,
        # reused page-locked slots.
        self._device = device if device is not None and device.type != "cpu" else None
        self._in_order = loader.in_order or loader.num_workers == 0
        self._first_seq: int | None = None  # the C++ sequence number of the epoch's first batch
        self._plan = plan  # holds the arrays whose memory the C++ threads read
        self._gather = C.GatherLoader(
            plan.index_plan,
            plan.leaves,
            plan.columns,
            num_threads=threads,
            max_in_flight=self._depth,
            pinned=self._pin_memory or self._device is not None,
            in_order=self._in_order,
            unbatched=not self._auto_collation,
            device=self._device,
            budget=budget,
        )
        # Stops the threads when the iterator goes (in a forked child that inherited it,
        # the C++ side only lets go of threads that exist in the parent alone).
        self._finalizer = weakref.finalize(self, self._gather.close)
        # Batches whose indices are not plain integers: torch fetches them, in their turn.
        # Everything else about the batches in flight is kept by the C++ pipeline, which
        # returns each batch with its indices: no Python state can fall out of step with
        # it (a KeyboardInterrupt may land between any two bytecodes).
        self._passthrough: dict[int, Any] = {}
        self._sampler_done = False
        self._torch_fetcher = _MapDatasetFetcher(
            self._dataset, self._auto_collation, self._collate_fn, self._drop_last
        )
        if self._num_workers > 0:
            # As torch's worker iterator, whose constructor ends with _reset: the sampler
            # is iterated a second time (one that draws when iterated draws twice), and
            # read ahead. _reset takes the stock batches.
            self._reset(loader, first_iter=True)
        else:
            self._use_stock_batches()

    def _use_stock_batches(self) -> None:
        """torch's stock batch samplers are drawn as int64 tensors, with the same generator
        draws (see _sampling); any other sampler keeps the iterator torch made (a second
        iter() could draw from a generator)."""
        stock = stock_batches(self._index_sampler)
        self._stock_sampler = stock is not None
        if stock is not None:
            self._sampler_iter = stock

    def _refill(self) -> None:
        while not self._sampler_done and self._gather.in_flight < self._depth:
            if (self._num_workers == 0 and self._gather.in_flight and self._stock_sampler
                    and self._sampler_iter.draws_next()):
                break  # as torch without workers: the generator moves when this batch is due
            try:
                index = self._next_index()
            except StopIteration:
                self._sampler_done = True
                break
            seq, plain = self._gather.submit(index)
            if self._first_seq is None:
                self._first_seq = seq
            # torch fetches what is not plain integers, and a batch the gather rejects
            # with the sampler's own index object (a tensor from a custom sampler)
            if not plain or (not self._stock_sampler and isinstance(index, torch.Tensor)):
                self._passthrough[seq] = index

    def _next_data(self) -> Any:
        self._refill()
        if self._gather.in_flight == 0:
            if not self._persistent_workers:
                self._shutdown()
            raise StopIteration
        got = self._gather.next(float(self._timeout))
        if got is None:
            raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")
        seq, columns, rejected, error, self.last_produce_s, indices, transfer_s = got
        if self._num_workers > 0:
            # torch's worker iterator draws the next batch's indices as it takes one in,
            # before raising its error or handing it over: the sampler stays as far ahead
            self._refill()
        self.last_transfer_s = transfer_s if self._device is not None else None
        if not self._in_order:
            self._yielded_task = seq - self._first_seq
        index = self._passthrough.pop(seq, None)
        if index is None:
            index = indices if self._auto_collation else indices[0]
        if error:
            raise RuntimeError(
                f"ferry native gather failed on batch {seq} (sampler indices {index!r}): {error}"
            )
        if columns is None:  # torch rejects this batch: let torch raise its own error
            return self._torch_fetch(index)
        return columns  # on the device already, if any

    def _torch_fetch(self, index: Any) -> Any:
        data = self._torch_fetcher.fetch(index)
        if self._pin_memory and self._device is None:
            data = pin_memory(data, self._pin_memory_device)
        return self._to_device(data)

    def _to_device(self, data: Any) -> Any:
        if self._device is None:
            return data
        return move_to_device(data, self._device)

    def _reset(self, loader: Any, first_iter: bool = False) -> None:
        super()._reset(loader, first_iter)
        self._use_stock_batches()
        # A persistent iterator starts a new epoch: drop what the last one left in flight.
        while self._gather.in_flight:
            self._gather.next(0.0)
        self._passthrough.clear()
        self._sampler_done = False
        self._first_seq = None
        if self._num_workers > 0:
            self._refill()

    def _shutdown(self) -> None:
        finalizer = getattr(self, "_finalizer", None)  # absent when __init__ failed
        if finalizer is not None:
            finalizer()

    def __del__(self) -> None:
        self._shutdown()
        super().__del__()  # Resumable's


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


def move_to_device(data: Any, device: torch.device) -> Any:
    """`data` with every tensor in it copied to `device` (non-blocking from pinned
    memory), keeping the nesting of dicts, lists, tuples and namedtuples."""
    return map_tensors(data, lambda ts: [t.to(device, non_blocking=True) for t in ts])


class DeviceCopier:
    """Moves whole batches to a CUDA device for the iterators whose batches arrive in
    ordinary memory (workers, threads, torch's own): in C++, without the GIL, through
    reused page-locked slots and a copy stream; the consumer's stream waits for the copy
    without blocking the host. Other tensors (already on a device, sparse) move as torch
    moves them."""

    def __init__(self, device: torch.device, slots: int, budget: Any = None) -> None:
        self._staged = _ext.load().StagedCopy(device, slots, budget)
        self._device = device

    def __call__(self, data: Any) -> Any:
        return map_tensors(data, self._move)

    def _move(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        host = [i for i, t in enumerate(tensors) if _stageable(t)]
        out = [t.to(self._device, non_blocking=True) if not _stageable(t) else t for t in tensors]
        staged = self._staged.to_device([tensors[i] for i in host])
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
