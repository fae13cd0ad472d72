"""The native gather path: array-backed datasets read by C++ threads, no Python per sample.

A dataset qualifies when it is a TensorDataset or ArrayDataset (or a Subset /
ConcatDataset of these, nested freely) whose item access is the stock one, and every
leaf has the same columns (dtype and row shape). `build_plan` compiles such a dataset to
an index plan plus raw array descriptions; anything else returns None and takes torch's
path.
"""

from __future__ import annotations

import itertools
import weakref
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
from ._iter import Done, ProducerIter, usable_cpus
from ._torch_compat import _MapDatasetFetcher
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
    """The gather's threads without workers."""
    return min(4, usable_cpus())


def native_iter(loader: Any, plan: NativePlan, budget: Any) -> ProducerIter:
    """The iterator of a loader whose dataset compiled to `plan`: C++ threads gather up to
    `prefetch_factor x threads` batches ahead (without workers, only as far as the
    sampler may be drawn ahead, see may_draw_ahead and ProducerIter)."""
    threads = loader.num_workers or default_threads()
    depth = (loader.prefetch_factor or 2) * threads
    if loader.num_workers == 0 and not may_draw_ahead(loader._index_sampler):
        depth = 1  # torch without workers draws each batch when it is asked for
    return ProducerIter(loader, lambda it: GatherProducer(it, plan, threads, depth, budget),
                        depth, budget, stock=True)


class GatherProducer:
    """C++ threads gather each batch's rows straight into a reused staging slot
    (page-locked with pin_memory or a device), and with a (CUDA) device copy it there on
    a side stream. A batch torch would reject (an index out of range), and one whose
    indices are not plain integers, is fetched by torch's own fetcher when its turn comes,
    so the error or the batch is torch's."""

    path = "native"
    stock_indices = False

    def __init__(self, it: Any, plan: NativePlan, threads: int, depth: int, budget: Any) -> None:
        self._plan = plan  # holds the arrays whose memory the C++ threads read
        self._on_device = it._device is not None
        self._pinned = it._pin_memory or self._on_device
        self.gather = _ext.load().GatherLoader(
            plan.index_plan,
            plan.leaves,
            plan.columns,
            num_threads=threads,
            max_in_flight=depth,
            pinned=self._pinned,
            in_order=it._in_order,
            unbatched=not it._auto_collation,
            device=it._device,
            budget=budget,
        )
        # Stops the threads when the producer goes (in a forked child that inherited it,
        # the C++ side only lets go of threads that exist in the parent alone).
        self._finalizer = weakref.finalize(self, self.gather.close)
        self._auto_collation = it._auto_collation
        self._torch_fetcher = _MapDatasetFetcher(
            it._dataset, it._auto_collation, it._collate_fn, it._drop_last
        )
        # Batches torch fetches, by C++ sequence number. Everything else about the
        # batches in flight is kept by the C++ pipeline, which returns each batch with
        # its indices: no Python state can fall out of step with it (a
        # KeyboardInterrupt may land between any two bytecodes).
        self._passthrough: dict[int, Any] = {}
        self._first_seq = 0  # the C++ sequence number of the epoch's first batch

    @property
    def in_flight(self) -> int:
        return self.gather.in_flight

    def submit(self, task: int, index: Any, position: int) -> bool:
        seq, plain = self.gather.submit(index)
        if task == 0:
            self._first_seq = seq
        # torch fetches what is not plain integers, and a batch the gather rejects with
        # the sampler's own index object (a tensor from a custom sampler)
        if not plain or (not self.stock_indices and isinstance(index, torch.Tensor)):
            self._passthrough[seq] = index
        return True

    def take(self, timeout: float | None) -> Done | None:
        got = self.gather.next(float(timeout or 0))
        if got is None:
            return None
        seq, columns, _rejected, error, produce_s, indices, transfer_s = got
        index = self._passthrough.pop(seq, None)
        task = seq - self._first_seq
        if columns is None or error:  # torch rejects this batch: torch raises its own error
            if index is None:
                index = indices if self._auto_collation else indices[0]
            if error:
                raise RuntimeError(f"ferry native gather failed on batch {seq} (sampler "
                                   f"indices {index!r}): {error}")
            return Done(self._torch_fetcher.fetch(index), task)
        return Done(columns, task, produce_s, transfer_s=transfer_s if self._on_device else None,
                    pinned=self._pinned, on_device=self._on_device)

    def late(self) -> str:
        return ""

    def drop(self, shared_seed: int | None) -> None:
        while self.gather.in_flight:
            self.gather.next(0.0)
        self._passthrough.clear()

    def close(self) -> None:
        self._finalizer()
