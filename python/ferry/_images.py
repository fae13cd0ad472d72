"""The native image path: ferry.vision datasets read, decoded and augmented in C++ threads.

A loader qualifies when its dataset is a ferry.vision dataset (or a Subset /
ConcatDataset of them) whose transform ferry can plan (`plan_sample`), and the collate
is the default one with automatic batching. Each batch then runs as:

1. indices from the loader's sampler (main thread, as torch draws them);
2. per sample, the random parameters of its transforms, drawn with torchvision's torch
   RNG calls in torch's order (main thread; a few microseconds a sample), giving an op
   list (crop, resize, flip, ...);
3. the pixels: every sample's file read, decoded and transformed by C++ (GIL released)
   straight into its row of the batch's image tensor; the targets collated beside it.

Where the draws come from, so that the batches are torch's: without workers torch's
main process fetches a batch when next() asks for it, its transforms drawing from the
global generator between the user's training steps, so ferry plans a batch at that
moment too (and decodes its samples in parallel). With `num_workers=n` torch seeds worker
w's generator with ``base_seed + w`` and sends it every n-th batch; ferry keeps one
generator state per emulated worker, so it may plan and decode `prefetch_factor x n`
batches ahead, on n threads, each decoding whole batches as a worker process would.
"""

from __future__ import annotations

import bisect
import collections
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Subset, default_collate

from . import _ext
from ._resume import Resumable
from ._torch_compat import _BaseDataLoaderIter, _DatasetKind


@dataclass
class _Leaf:
    dataset: Any  # a ferry.vision dataset
    index: int  # the sample's index in it


def _vision() -> Any:
    from . import vision

    return vision


def _leaf_datasets(ds: Any) -> list[Any] | None:
    """The ferry.vision datasets under `ds` (through stock Subset / ConcatDataset), or
    None when something else is in the way."""
    cls = type(ds)
    if isinstance(ds, _vision()._samples.ImageSamples) and ds.supports_native():
        return [ds]
    if cls is Subset:
        return _leaf_datasets(ds.dataset)
    if cls is ConcatDataset:
        found: list[Any] = []
        for child in ds.datasets:
            sub = _leaf_datasets(child)
            if sub is None:
                return None
            found += sub
        return found
    return None


def qualifies(loader: Any) -> bool:
    """Whether `loader` can take the native image path."""
    if (
        loader._dataset_kind != _DatasetKind.Map
        or not loader._auto_collation
        or loader.collate_fn is not default_collate
        or (loader.num_workers > 0 and loader.worker_init_fn is not None)
        or (loader.num_workers == 0 and loader.timeout != 0)  # torch rejects it: let it
    ):
        return False
    if "load_images" not in dir(_ext.load()):
        return False
    return _leaf_datasets(loader.dataset) is not None


def _resolve(ds: Any, index: Any) -> _Leaf:
    """Sample `index` of `ds`, through Subsets and ConcatDatasets, by torch's rules
    (negative indices, a ConcatDataset's stored sizes). Raises torch's errors."""
    while True:
        if type(ds) is Subset:
            index = ds.indices[index]
            ds = ds.dataset
        elif type(ds) is ConcatDataset:
            if index < 0:
                if -index > len(ds):
                    raise ValueError("absolute value of index should not exceed dataset length")
                index = len(ds) + index
            k = bisect.bisect_right(ds.cumulative_sizes, index)
            index = index - (ds.cumulative_sizes[k - 1] if k > 0 else 0)
            ds = ds.datasets[k]
        else:
            return _Leaf(ds, index)


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def output_shape(ops: list[Any], size: tuple[int, int]) -> tuple[tuple[int, ...], torch.dtype]:
    """The shape and dtype of the tensor an op list makes of an RGB image of `size`
    (width, height) (see ferry.vision._plan)."""
    channels, (width, height) = 3, size
    for op in ops:
        kind = op[0]
        if kind == "crop":
            height, width = op[3], op[4]
        elif kind == "pad":
            width += op[1] + op[3]
            height += op[2] + op[4]
        elif kind == "resize":
            height, width = op[1], op[2]
        elif kind == "gray":
            channels = op[1]
        elif kind == "pil_to_tensor":
            return (channels, height, width), torch.uint8
        elif kind == "to_tensor":
            return (channels, height, width), torch.float32
    raise ValueError(f"ferry: an op list without a tensor stage: {ops!r}")


class _Batch:
    """One batch planned: for each sample, its file and ops for the C++ pipeline (or its
    image already made, where its file takes the Python path), and its target."""

    def __init__(self, indices: list[int], samples: list[tuple[Any, ...]]) -> None:
        self.indices = indices
        self.paths = [s[0] for s in samples]  # None: the image was made in Python
        self.ops = [s[1] for s in samples]  # the ops, or that image
        self.targets = [s[2] for s in samples]
        self.fast = [s[3] for s in samples]  # the dataset's decode="fast"
        self.sizes = [s[4] for s in samples]  # (width, height) of the file, or None
        self.error: Exception | None = None  # a sample failed while it was planned
        self.worker: int | None = None  # the emulated worker that planned it
        self.rng_after: torch.Tensor | None = None  # that worker's generator after it


class ImagesIter(Resumable, _BaseDataLoaderIter):
    """Iterates a loader over ferry.vision datasets with the native image pipeline."""

    path = "images"
    last_produce_s: float | None = None  # the last batch's decode time (C++)

    def __init__(self, loader: Any) -> None:
        self._init_resume(loader)
        super().__init__(loader)
        self._C = _ext.load()
        self._n = loader.num_workers
        self._in_order = loader.in_order or self._n == 0
        self._depth = max(1, (loader.prefetch_factor or 2) * self._n) if self._n else 1
        self._threads = default_threads()
        # One generator state per emulated worker, seeded as torch seeds worker w.
        self._worker_rng = [self._seeded(self._base_seed + w) for w in range(self._n)]
        # For state_dict: each worker's generator after its last batch handed over (a
        # resumed iterator starts its workers there, as process workers restore theirs).
        self._worker_states = [None] * self._n if self._n else None
        for w, state in enumerate((self._resume or {}).get("workers") or []):
            if state and state.get("rng") is not None and w < self._n:
                self._worker_rng[w] = state["rng"]["torch"].clone()
                self._worker_states[w] = state
        self._pool = ThreadPoolExecutor(max(1, self._n), thread_name_prefix="ferry-images")
        self._pending: collections.deque[tuple[int, Future, _Batch]] = collections.deque()
        self._sampler_done = False
        if self._n > 0:
            # torch's worker iterator ends its constructor with _reset (the sampler is
            # iterated again) and reads ahead
            self._reset(loader, first_iter=True)

    @staticmethod
    def _seeded(seed: int) -> torch.Tensor:
        return torch.Generator().manual_seed(seed).get_state()

    # --- planning: the draws, in torch's order ----------------------------------------
    def _plan(self, index: Any) -> _Batch:
        indices = list(index)
        samples: list[tuple[Any, ...]] = []
        compiled: dict[int, Any] = {}  # each dataset's transform, compiled once a batch
        for i in indices:
            leaf = _resolve(self._dataset, i)
            try:
                ds = leaf.dataset
                if id(ds) not in compiled:
                    compiled[id(ds)] = ds._compiled()
                planned = ds.native_plan(leaf.index, compiled[id(ds)])
                if planned is None:  # a file the C++ decoders do not read: Python, now
                    image, target = ds[leaf.index]
                    planned = (None, image, target, None)
                path, ops, target, size = planned
                planned = (path, ops, target, ds.fast, size)
            except Exception as exc:
                # raised when this batch is handed over, as torch's worker would; the
                # batch's later samples are not drawn for (torch's fetch stops here)
                path = leaf.dataset.samples[leaf.index][0]
                exc.add_note(f"(ferry.vision: {path}, sample index {i})")
                batch = _Batch(indices, samples)
                batch.error = exc
                return batch
            samples.append(planned)
        return _Batch(indices, samples)

    def _plan_as_worker(self, worker: int, index: Any) -> _Batch:
        """Plans a batch with worker `worker`'s generator standing in for the global one,
        which is then given back as it was."""
        user = torch.get_rng_state()
        torch.set_rng_state(self._worker_rng[worker])
        try:
            return self._plan(index)
        finally:
            self._worker_rng[worker] = torch.get_rng_state()
            torch.set_rng_state(user)

    # --- the pixels ------------------------------------------------------------------
    def _decode(self, batch: _Batch, threads: int) -> tuple[Any, float]:
        started = time.perf_counter()
        if batch.error is not None:
            raise batch.error
        shapes = {output_shape(ops, size) if path is not None else (tuple(ops.shape), ops.dtype)
                  for path, ops, size in zip(batch.paths, batch.ops, batch.sizes, strict=True)}
        if (len(shapes) == 1 and all(p is not None for p in batch.paths)
                and len(set(batch.fast)) == 1):
            (shape, dtype), = shapes
            images = torch.empty((len(batch.paths), *shape), dtype=dtype,
                                 pin_memory=self._pin_memory)
            self._load(batch, images, threads)
        else:
            # images of different sizes (torch's collate raises its own error on them),
            # some made in Python, or datasets with different decode modes: one at a time,
            # then collated as torch collates them
            images = default_collate([
                o if p is None else self._load_one(batch, k)
                for k, (p, o) in enumerate(zip(batch.paths, batch.ops, strict=True))])
            if self._pin_memory:
                images = images.pin_memory()
        targets = default_collate(batch.targets)
        if self._pin_memory:
            targets = targets.pin_memory() if isinstance(targets, torch.Tensor) else targets
        return [images, targets], time.perf_counter() - started

    def _load(self, batch: _Batch, out: torch.Tensor, threads: int) -> None:
        # the C++ error names the file and the sample's position in the batch
        try:
            self._C.load_images(batch.paths, batch.ops, out, threads, 0, fast=batch.fast[0])
        except Exception as exc:
            exc.add_note(f"(ferry's image pipeline: a batch of sample indices {batch.indices})")
            raise

    def _load_one(self, batch: _Batch, k: int) -> torch.Tensor:
        try:
            return self._C.load_image(batch.paths[k], batch.ops[k], batch.indices[k],
                                      fast=batch.fast[k])
        except Exception as exc:
            exc.add_note(f"(ferry's image pipeline: sample index {batch.indices[k]})")
            raise

    # --- the iterator ----------------------------------------------------------------
    def _refill(self) -> None:
        while not self._sampler_done and len(self._pending) < self._depth:
            try:
                index = self._next_index()
            except StopIteration:
                self._sampler_done = True
                return
            # torch sends the epoch's k-th batch to worker k % n (a resumed epoch's
            # first batch is not its first position)
            worker = self._position() % self._n
            batch = self._plan_as_worker(worker, index)
            batch.worker, batch.rng_after = worker, self._worker_rng[worker]
            self._pending.append((worker, self._pool.submit(self._decode, batch, 1), batch))

    def _position(self) -> int:
        """The epoch position of the batch whose indices were drawn last."""
        assert self._epoch is not None
        return self._epoch.drawn_position()

    def _next_data(self) -> Any:
        if self._n == 0:
            index = self._next_index()  # StopIteration ends the epoch
            batch = self._plan(index)  # the global generator, now, as torch draws it
            data, self.last_produce_s = self._decode(batch, self._threads)
            return data
        self._refill()
        if not self._pending:
            if not self._persistent_workers:
                self._shutdown()
            raise StopIteration
        _, future, batch = self._pending.popleft()
        assert self._worker_states is not None and batch.worker is not None
        # handed over (or its error raised): its worker is past it
        self._worker_states[batch.worker] = {"rng": {"torch": batch.rng_after}}
        timeout = self._timeout if self._timeout > 0 else None
        try:
            data, self.last_produce_s = future.result(timeout)
        except FutureTimeout:
            raise RuntimeError(
                f"DataLoader timed out after {self._timeout} seconds (ferry's image "
                f"pipeline, sample indices {batch.indices})") from None
        finally:
            self._refill()  # as torch, the next batch's indices drawn as one is taken in
        return data

    def _reset(self, loader: Any, first_iter: bool = False) -> None:
        super()._reset(loader, first_iter)
        while self._pending:  # the last epoch's batches still in flight
            _, future, _ = self._pending.popleft()
            if not future.cancel():
                future.exception()
        self._sampler_done = False
        if self._n > 0:
            self._refill()

    def _shutdown(self) -> None:
        for _, future, _ in self._pending:
            future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __del__(self) -> None:
        if hasattr(self, "_pool"):
            self._shutdown()
