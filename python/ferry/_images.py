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
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Subset, default_collate

from . import _ext
from ._iter import Done, ProducerIter, usable_cpus
from ._threads import PoolProducer
from ._torch_compat import _DatasetKind


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
        self.task = 0  # which batch of the epoch
        self.worker: int | None = None  # the emulated worker that planned it
        self.rng_after: torch.Tensor | None = None  # that worker's generator after it


def images_iter(loader: Any, budget: Any) -> ProducerIter:
    """The iterator of a loader that `qualifies`: `prefetch_factor x n` batches in flight
    with `n` workers; one, drawn when next() asks for it, without."""
    n = loader.num_workers
    depth = (loader.prefetch_factor or 2) * n if n else 1
    return ProducerIter(loader, ImageProducer, depth, budget)


class ImageProducer(PoolProducer):
    """Plans each batch in the main thread as it is submitted (the random draws of its
    transforms, with the generator of the worker torch would send it to), then decodes
    it on a thread of its own (one per emulated worker; without workers, all usable
    cores on the one batch, when it is taken). In order: each batch carries its
    worker's generator state after it, for state_dict."""

    path = "images"
    stock_indices = False

    def __init__(self, it: Any) -> None:
        super().__init__(it._num_workers, True, "ferry-images")
        self._C = _ext.load()
        self._dataset = it._dataset
        self._pin = it._pin_memory and it._device is None
        self._n = it._num_workers
        self._decode_threads = usable_cpus()
        # One generator state per emulated worker, seeded as torch seeds worker w.
        self._worker_rng = [self._seeded(it._base_seed + w) for w in range(self._n)]
        # For state_dict (the iterator's _worker_states): each worker's generator after
        # its last batch handed over (a resumed iterator starts its workers there, as
        # process workers restore theirs).
        self.worker_states: list[Any] | None = [None] * self._n if self._n else None
        for w, state in enumerate((it._resume or {}).get("workers") or []):
            if state and state.get("rng") is not None and w < self._n:
                self._worker_rng[w] = state["rng"]["torch"].clone()
                self.worker_states[w] = state  # type: ignore[index]
        self._undecoded: _Batch | None = None  # without workers: the batch to decode

    @staticmethod
    def _seeded(seed: int) -> torch.Tensor:
        return torch.Generator().manual_seed(seed).get_state()

    # --- planning: the draws, in torch's order ----------------------------------------
    def _plan(self, index: Any) -> _Batch:
        indices = list(index)
        samples: list[tuple[Any, ...]] = []
        compiled: dict[int, Any] = {}  # each dataset's transform, compiled once a batch
        for i in indices:
            leaf = None
            try:
                leaf = _resolve(self._dataset, i)  # torch's IndexError, in this batch's turn
                ds = leaf.dataset
                if id(ds) not in compiled:
                    compiled[id(ds)] = ds.compiled_transform()
                planned = ds.native_plan(leaf.index, compiled[id(ds)])
                if planned is None:  # a file the C++ decoders do not read: Python, now
                    image, target = ds[leaf.index]
                    planned = (None, image, target, None)
                path, ops, target, size = planned
                planned = (path, ops, target, ds.fast, size)
            except Exception as exc:
                # raised when this batch is handed over, as torch's worker would; the
                # batch's later samples are not drawn for (torch's fetch stops here)
                if leaf is not None:
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
    def _decode(self, batch: _Batch, threads: int) -> Done:
        started = time.perf_counter()
        if batch.error is not None:
            raise batch.error
        shapes = {output_shape(ops, size) if path is not None else (tuple(ops.shape), ops.dtype)
                  for path, ops, size in zip(batch.paths, batch.ops, batch.sizes, strict=True)}
        if (len(shapes) == 1 and all(p is not None for p in batch.paths)
                and len(set(batch.fast)) == 1):
            (shape, dtype), = shapes
            images = torch.empty((len(batch.paths), *shape), dtype=dtype, pin_memory=self._pin)
            self._load(batch, images, threads)
            pinned = self._pin
        else:
            # images of different sizes (torch's collate raises its own error on them),
            # some made in Python, or datasets with different decode modes: one at a time,
            # then collated as torch collates them (and pinned by the iterator)
            images = default_collate([
                o if p is None else self._load_one(batch, k)
                for k, (p, o) in enumerate(zip(batch.paths, batch.ops, strict=True))])
            pinned = False
        targets = default_collate(batch.targets)
        if pinned and isinstance(targets, torch.Tensor):
            targets = targets.pin_memory()
        return Done([images, targets], batch.task, time.perf_counter() - started,
                    pinned=pinned)

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

    # --- the producer ----------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._pending) + (self._undecoded is not None)

    def submit(self, task: int, index: Any, position: int) -> bool:
        if self._n == 0:  # the global generator, now, as torch draws it
            self._undecoded = self._plan(index)
            self._undecoded.task = task
            return True
        # torch sends the epoch's k-th batch to worker k % n (a resumed epoch's first
        # batch is not its first position)
        worker = position % self._n
        batch = self._plan_as_worker(worker, index)
        batch.task, batch.worker, batch.rng_after = task, worker, self._worker_rng[worker]
        self._start(batch, self._decode, batch, 1)
        return True

    def take(self, timeout: float | None) -> Done | None:
        if self._undecoded is not None:
            batch, self._undecoded = self._undecoded, None
            return self._decode(batch, self._decode_threads)
        return super().take(timeout)

    def drop(self, shared_seed: int | None) -> None:
        # the emulated workers' generators moved past the batches planned (as torch's
        # workers fetched them before the epoch was left): that is where they stand
        for _, batch in self._pending:
            self._handing_over(batch)
        self._undecoded = None
        super().drop(shared_seed)

    def _handing_over(self, batch: _Batch) -> None:
        assert self.worker_states is not None and batch.worker is not None
        # handed over (or its error raised): its worker is past it
        self.worker_states[batch.worker] = {"rng": {"torch": batch.rng_after}}

    def late(self) -> str:
        assert self._late is not None
        return f" (ferry's image pipeline, sample indices {self._late[1].indices})"
