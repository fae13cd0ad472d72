"""ferry.DataLoader: torch's DataLoader, same constructor plus `device=`, faster inside."""

from __future__ import annotations

import copy
import weakref
from typing import Any, TypeVar

import torch
import torch.utils.data
from torch.utils.data import default_collate, default_convert

from . import _ext, _images, _iter, _native, _resume, _stats, _threads, _workers
from ._torch_compat import _DatasetKind, _SingleProcessDataLoaderIter

__all__ = ["DataLoader"]

_T_co = TypeVar("_T_co", covariant=True)  # torch's DataLoader is generic in it too


def _resolve_device(device: Any) -> torch.device | None:
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"ferry.DataLoader: device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if not torch.cuda.is_available():
        why = (
            "this torch was built without CUDA"
            if torch.version.cuda is None
            else "no CUDA device is visible"
        )
        raise RuntimeError(f"ferry.DataLoader(device={device!r}): CUDA is not available ({why})")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise RuntimeError(
            f"ferry.DataLoader(device={device!r}): there are only "
            f"{torch.cuda.device_count()} CUDA devices"
        )
    return torch.device("cuda", index)


class DataLoader(torch.utils.data.DataLoader[_T_co]):
    """A drop-in :class:`torch.utils.data.DataLoader`: the same arguments, the same
    batches for an equal ``generator``, plus ``device``.

    Args:
        device: where batches arrive (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
            :class:`torch.device`). ``None`` (the default) keeps torch's behaviour: CPU
            tensors. Asking for CUDA where there is none raises RuntimeError.
        worker_type: ``"process"`` (the default: worker processes, as torch) or
            ``"thread"``: worker threads in this process, for map-style datasets that
            release the GIL and for free-threaded Python (shared random generators, so
            torch's per-worker seeding is not reproduced; ``get_worker_info()`` is None).
        distributed: under a running ``torch.distributed`` process group, shard the
            (map-style) dataset by rank and world size with a
            :class:`~torch.utils.data.DistributedSampler` (``shuffle`` as given, ``seed``
            the ``generator``'s initial seed, or 0), so every rank gets the same number
            of batches. Call :meth:`set_epoch` before each epoch to reshuffle.
        memory_budget: the most page-locked and shared memory, in bytes, an iterator of
            this loader may hold at once for batches on their way: the shared-memory
            rings of worker processes (together; each worker also checks an equal share
            before it makes a ring) and the page-locked staging slots of ``pin_memory``
            and ``device``. An allocation
            beyond it raises RuntimeError saying what was asked, what is in use and the
            limit, rather than growing. Batches already handed over are the user's
            memory, as with torch. ``None`` (the default): no limit beyond what the
            prefetch depth implies. ``ferry.backend_info()["memory_in_use"]`` reports
            what the process holds.

    Every other argument means what it means for torch's DataLoader. Array-backed
    datasets (``TensorDataset``, :class:`ferry.ArrayDataset`, and ``Subset`` /
    ``ConcatDataset`` of them) with the default collation are gathered by C++ threads
    straight into reused staging buffers (``num_workers`` threads, or up to 4 when it is
    0). Other datasets with ``num_workers > 0`` run in worker processes that collate
    straight into shared-memory rings (or in threads, see ``worker_type``); with
    ``num_workers=0`` they run torch's own single-process iteration.
    """

    device: torch.device | None
    worker_type: str
    _resumable: Any = None  # a weak reference to the latest iterator
    _resume_token: object | None = None  # the latest iterator's (see Resumable)
    _left_snapshot: dict[str, Any] | Exception | None = None  # where it stopped, once gone
    _pending_resume: dict[str, Any] | None = None

    def __init__(
        self,
        dataset: torch.utils.data.Dataset[_T_co],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: torch.utils.data.Sampler | Any | None = None,
        batch_sampler: torch.utils.data.Sampler[list] | Any | None = None,
        num_workers: int = 0,
        collate_fn: Any | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Any | None = None,
        multiprocessing_context: Any = None,
        generator: Any = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        device: torch.device | str | None = None,
        worker_type: str = "process",
        distributed: bool = False,
        memory_budget: int | None = None,
    ) -> None:
        _ext.load()  # a broken build fails here, loudly, not later in a fallback
        if worker_type not in ("process", "thread"):
            raise ValueError(f"worker_type must be 'process' or 'thread', got {worker_type!r}")
        if memory_budget is not None and (
            not isinstance(memory_budget, int) or isinstance(memory_budget, bool)
        ):
            raise TypeError(f"memory_budget must be an int (bytes) or None, got {memory_budget!r}")
        if memory_budget is not None and memory_budget <= 0:
            raise ValueError(f"memory_budget must be positive, got {memory_budget}")
        self.memory_budget = memory_budget
        self.device = _resolve_device(device)
        self.worker_type = worker_type
        # Kept under their own names, so that frameworks that re-create a loader from
        # its attributes (Lightning, to inject a sampler) keep them.
        self.distributed = bool(distributed)
        if distributed:
            sampler = _distributed_sampler(dataset, sampler, batch_sampler, shuffle, generator)
            shuffle = None
        super().__init__(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            batch_sampler=batch_sampler,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            drop_last=drop_last,
            timeout=timeout,
            worker_init_fn=worker_init_fn,
            multiprocessing_context=multiprocessing_context,
            generator=generator,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            pin_memory_device=pin_memory_device,
            in_order=in_order,
        )

    def _native_plan(self) -> _native.NativePlan | None:
        default = default_collate if self._auto_collation else default_convert
        if (
            self._dataset_kind != _DatasetKind.Map
            or self.collate_fn is not default
            or (self.num_workers == 0 and self.timeout != 0)  # torch rejects this: let it
            # worker_init_fn runs in torch's worker processes, and its effects and errors
            # are the user's to see: the native path has no worker processes.
            or (self.num_workers > 0 and self.worker_init_fn is not None)
        ):
            return None
        return _native.build_plan(self.dataset)

    def stats(self) -> _stats.LoaderStats:
        """How the latest iterator of this loader did over its last 100 batches: the
        consumer's wait for data and its own time between batches, the producer's time
        per batch, batches/s and the data-starvation ratio. Cheap: always on.

            for step, (x, y) in enumerate(loader):
                ...
                if step % 100 == 0:
                    print(loader.stats())   # starvation near 1: the loop is data-bound
        """
        recorder = getattr(self, "_stats_recorder", None)
        if recorder is None:
            return _stats.StatsRecorder("none").snapshot()
        return recorder.snapshot()

    def __repr__(self) -> str:
        recorder = getattr(self, "_stats_recorder", None)
        stats = f", {recorder.snapshot()}" if recorder is not None else ""
        return (
            f"ferry.DataLoader({type(self.dataset).__name__}, batch_size={self.batch_size}, "
            f"num_workers={self.num_workers}, device={self.device}{stats})"
        )

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle a DistributedSampler (the one ``distributed=True`` made, or yours)
        for `epoch`, as ``sampler.set_epoch(epoch)`` does."""
        sampler = _epoch_sampler(self)
        if sampler is None:
            raise TypeError(f"set_epoch: the loader's sampler ({type(self.sampler).__name__}) "
                            "has no set_epoch")
        sampler.set_epoch(epoch)

    # --- checkpoints --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where this loader is: after ``load_state_dict`` of this state, a fresh loader
        built with the same arguments yields exactly the batches this one would yield
        next, to the bit, through the end of the epoch and the following ones (batches
        prefetched but not yet yielded are fetched again: none lost, none repeated).

        Take it anywhere between batches: mid-epoch, after leaving a loop with
        ``break`` (the iterator may be gone), at an epoch's end, before the first
        ``iter()``. A state where the next ``iter()`` begins an epoch pins that epoch's
        random seeds (the workers' base seed, a sampler's seed drawn from torch's
        global generator). Plain data (numbers, lists, byte tensors, and what your
        datasets' ``state_dict()`` return), copied when taken: ``torch.save`` /
        ``torch.load`` keep it::

            torch.save({"model": model.state_dict(), "loader": loader.state_dict()}, f)
            ...
            loader = ferry.DataLoader(...same arguments...)
            loader.load_state_dict(torch.load(f)["loader"])

        The sampler's randomness is restored where it comes from torch generators (the
        loader's ``generator``, the sampler's own, torch's global one, which resume
        borrows without changing the training loop's state); the workers' from their
        torch, ``random`` and numpy generators; a dataset's own position from its
        ``state_dict()``/``load_state_dict()`` and its iterator's, when they have them,
        as torchdata's StatefulDataLoader does (otherwise an IterableDataset's epoch is
        replayed up to the snapshot, reading its skipped batches again). Skipped batches
        of a map-style dataset are not read.
        """
        snap = self._last_position()
        if snap is None or snap["epoch"] is None:
            snap = _resume.between_epochs(self, snap)
        sampler_epoch = getattr(_epoch_sampler(self), "epoch", None)
        state = {
            "ferry_state_version": _resume.VERSION,
            "config": _resume.fingerprint(self),
            "generators": [g.get_state() for g in _resume.sampler_generators(self)],
            "sampler_epoch": sampler_epoch if isinstance(sampler_epoch, int) else None,
            "iterator": snap,
        }
        state["checksum"] = _resume.checksum(state)
        return state

    def _last_position(self) -> dict[str, Any] | None:
        """The latest iterator's snapshot (alive, or left when it went), or the loaded
        state not used yet (copies); None before the first iter()."""
        it = self._resumable() if self._resumable is not None else None
        if it is not None:
            return it.snapshot()
        left = self._left_snapshot
        if isinstance(left, Exception):
            raise RuntimeError(
                "state_dict: the loader's last iterator could not record where it stopped"
            ) from left
        if left is not None:
            return copy.deepcopy(left)
        return copy.deepcopy(self._pending_resume)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (see :meth:`state_dict`): the next ``iter(loader)``
        yields what the loader that made it would have yielded next. `state` is only
        read: it may be loaded again, here or into other loaders. A state from a loader
        configured differently, or a corrupted one, raises ValueError."""
        _resume.validate(state, self)
        state = copy.deepcopy(state)
        generators = _resume.sampler_generators(self)
        if len(generators) != len(state["generators"]):
            raise ValueError(
                f"load_state_dict: the state has {len(state['generators'])} sampler "
                f"generators, this loader has {len(generators)}"
            )
        for g, s in zip(generators, state["generators"], strict=True):
            g.set_state(s)
        if state["sampler_epoch"] is not None:
            _epoch_sampler(self).set_epoch(state["sampler_epoch"])
        if self._iterator is not None:  # persistent workers of the old position: stop them
            old, self._iterator = self._iterator, None
            del old
        # an older iterator, still alive or going, no longer says where the loader is
        self._resumable = self._resume_token = self._left_snapshot = None
        self._pending_resume = state["iterator"]

    def _take_resume(self) -> dict[str, Any] | None:
        """For the iterator being made: the loaded state it continues from, with the
        random states before it was made (its seed draw is undone)."""
        resume, self._pending_resume = self._pending_resume, None
        if resume is None:
            return None
        return {
            **resume,
            "rng_before_iter": {
                "global": torch.get_rng_state(),
                "loader": self.generator.get_state() if self.generator is not None else None,
            },
        }

    def _get_iterator(self) -> _iter.ProducerIter:
        pending = self._pending_resume
        try:
            iterator = self._make_iterator()
        except BaseException:
            self._pending_resume = pending  # still to be resumed by the next iter()
            raise
        self._resume_token = iterator._resume_token = object()
        self._resumable = weakref.ref(iterator)
        self._left_snapshot = None
        self._stats_recorder = iterator._recorder = _stats.StatsRecorder(iterator.path)
        return iterator

    def _make_iterator(self) -> _iter.ProducerIter:
        # counts (and with memory_budget limits) the iterator's page-locked memory
        budget = _ext.load().MemoryBudget(self.memory_budget or 0)
        plan = self._native_plan()
        if plan is not None:
            return _native.native_iter(self, plan, budget)
        if _images.qualifies(self):
            if self.num_workers > 0:
                self.check_worker_number_rationality()  # torch's warning, as with workers
            return _images.images_iter(self, budget)
        if self.num_workers > 0 and self.worker_type == "thread":
            return _threads.thread_iter(self, budget)
        if self.num_workers > 0:
            self.check_worker_number_rationality()
            return _workers.process_iter(self, budget)
        return _SingleIter(self, budget)


def _distributed_sampler(
    dataset: Any, sampler: Any, batch_sampler: Any, shuffle: bool | None, generator: Any
) -> torch.utils.data.DistributedSampler:
    """The sampler of ``distributed=True``: rank and world size from the running process
    group, every rank the same number of samples (DistributedSampler pads)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "ferry.DataLoader(distributed=True) needs a running torch.distributed process "
            "group: call torch.distributed.init_process_group first"
        )
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise ValueError(
            "distributed=True shards a map-style dataset through its sampler; an "
            "IterableDataset must shard itself by rank"
        )
    if isinstance(sampler, torch.utils.data.DistributedSampler):
        return sampler  # already sharded (a framework re-creating this loader)
    if sampler is not None or batch_sampler is not None:
        raise ValueError(
            "distributed=True makes its own DistributedSampler: pass either distributed=True "
            "or a sampler/batch_sampler, not both"
        )
    seed = generator.initial_seed() if generator is not None else 0
    return torch.utils.data.DistributedSampler(
        dataset,
        num_replicas=dist.get_world_size(),
        rank=dist.get_rank(),
        shuffle=bool(shuffle),
        seed=seed,
    )


def _epoch_sampler(loader: Any) -> Any:
    """The sampler whose ``set_epoch`` reshuffles (a DistributedSampler), or None."""
    for s in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        if callable(getattr(s, "set_epoch", None)):
            return s
    return None


class _SingleIter(_iter.ProducerIter, _SingleProcessDataLoaderIter):
    """Without workers, the datasets no other path takes: torch's own fetch, in the main
    thread when next() asks (torch's constructor makes the fetcher, as torch checks and
    shards); the dataset's own position (and its iterator's) kept for resume."""

    def __init__(self, loader: Any, budget: Any) -> None:
        super().__init__(loader, _FetchProducer, 1, budget)
        if self._dataset_kind == _DatasetKind.Iterable:
            _resume.restore_after_iter(self._dataset_fetcher, *self._stream_resume)

    def _init_resume(self, loader: Any) -> None:
        super()._init_resume(loader)
        resume = self._resume or {}
        # a stream recorded between epochs had ended: the iter() of torch's constructor
        # begins the next one
        self._stream_resume = (resume.get("stream"), bool(resume.get("between_epochs")))
        _resume.restore_before_iter(loader.dataset, *self._stream_resume)

    def _stream_has_state(self) -> bool:
        iterator = getattr(self._dataset_fetcher, "dataset_iter", None)
        return _resume.has_state(self._dataset) or _resume.has_state(iterator)

    def resume_snapshot(self) -> dict[str, Any]:
        state = super().resume_snapshot()
        if self._resume is None:  # (a loaded state not used yet has its own)
            fetcher = self._dataset_fetcher
            state["stream"] = _resume.stream_state(
                self._dataset, getattr(fetcher, "dataset_iter", None),
                getattr(fetcher, "ended", False),
            )
        return state


class _FetchProducer:
    """torch's fetch of a batch, in the main thread, when it is taken."""

    path = "torch"
    stock_indices = False

    def __init__(self, it: _SingleIter) -> None:
        self._fetcher = it._dataset_fetcher
        self._next: tuple[int, Any] | None = None

    @property
    def in_flight(self) -> int:
        return int(self._next is not None)

    def submit(self, task: int, index: Any, position: int) -> bool:
        self._next = (task, index)
        return True

    def take(self, timeout: float | None) -> _iter.Done:
        assert self._next is not None
        (task, index), self._next = self._next, None
        return _iter.Done(self._fetcher.fetch(index), task)  # StopIteration: a stream's end

    def late(self) -> str:
        return ""

    def drop(self, shared_seed: int | None) -> None:
        self._next = None

    def close(self) -> None:
        pass
