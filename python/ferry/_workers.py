"""Worker processes that collate straight into a shared-memory ring.

torch's own multiprocessing iterator runs the workers (seeding, get_worker_info,
worker_init_fn, IterableDataset sharding, in_order, timeout, persistent workers and
error wrapping are torch's). ferry changes how a batch travels:

* each worker owns a ring of slots in a memfd (no /dev/shm entry, nothing to leak) that
  the main process created before starting it; the worker sizes it from its first
  batch;
* with the default collation, tensors are stacked straight into the worker's claimed
  slot; a custom ``collate_fn`` runs as in torch and its tensors are copied in;
* the batch goes back as a small pickle in which every tensor is a reference into the
  slot (``persistent_id``), so no file descriptor per tensor and no tensor bytes are
  pickled; a tensor that does not fit the slot is pickled by value;
* the main process turns references into views of the slot, which is freed when the
  last view dies, or copies them out when the user already holds several batches of
  that worker, so a worker always finds a free slot.
"""

from __future__ import annotations

import faulthandler
import io
import mmap
import multiprocessing
import os
import pickle
import signal
import threading
import time
import types
import warnings
import weakref
from dataclasses import dataclass
from functools import partial
from multiprocessing.reduction import ForkingPickler as _ForkingPickler
from typing import Any

import torch
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from . import _ext
from ._errors import SampleExceptionWrapper, worker_death
from ._iter import LoaderIter
from ._resume import RngWatcher, WorkerStream, has_state, rng_blob, worker_resumes
from ._torch_compat import (
    MP_STATUS_CHECK_INTERVAL,
    ExceptionWrapper,
    _DatasetKind,
    _IterableDatasetStopIteration,
    _MultiProcessingDataLoaderIter,
    collate,
    collate_tensor_fn,
    default_collate_fn_map,
    forget_worker_pids,
    pin_memory,
    python_exiting,
    worker_module,
)

_ALIGN = 64
_PAGE = 4096
# A ring's slot is sized from a worker's first batch, with room for somewhat larger ones.
_HEADROOM = 1.25
# Slots beyond the prefetched batches: the batch the user holds, one being collated, spare.
_EXTRA_SLOTS = 4
# Views of a worker's slots the user may hold before further batches are copied out.
_MAX_HELD = 2
# How often a waiting consumer checks that the workers are alive.
_POLL_SECONDS = 0.1
# The signal on which a worker dumps its Python stacks for the watchdog.
STACK_SIGNAL = signal.SIGUSR1
# How long stopping workers may take to exit on their own before they are terminated.
_STOP_GRACE_SECONDS = 1.0


def _align(n: int, to: int = _ALIGN) -> int:
    return (n + to - 1) // to * to


@dataclass
class Packed:
    """One batch as a worker sends it: the pickled structure, in which tensor k is
    persistent id k, and where each tensor is: (offset, dtype, sizes, strides) in `slot`
    of the worker's ring, or pickled bytes."""

    worker: int
    ring_offset: int  # where the worker's ring (of this batch's generation) starts
    slot: int
    payload: bytes
    tensors: list[tuple[int, torch.dtype, list[int], list[int]] | bytes]
    # When the worker began collating it and when it was done (time.monotonic, one clock
    # for every process of the machine): its fetch began when the task was sent or the
    # worker's previous batch was done, whichever was later.
    collate_started: float = 0.0
    finished: float = 0.0
    # The worker's generators after this batch (None: unchanged since its last batch),
    # and its dataset's stream (None: it keeps no state), for DataLoader.state_dict().
    rng: bytes | None = None
    stream: bytes | None = None
    ended: bool = False  # a short batch: the worker's IterableDataset ran out making it
    task: int = -1  # torch's task index, set in the main process


@dataclass(frozen=True)
class _EndedWithState(_IterableDatasetStopIteration):
    """torch's end-of-data marker, made in a worker whose IterableDataset ran out, with
    the worker's generators and its dataset's stream at that moment: where the worker's
    next epoch starts from (persistent workers)."""

    rng: Any = None
    stream: bytes | None = None

    def __post_init__(self) -> None:
        if _stream is None:
            return
        object.__setattr__(self, "rng", rng_blob())
        object.__setattr__(self, "stream", _stream.report(ended=True))


class _Arena:
    """Bump allocation of tensors inside one claimed slot."""

    def __init__(self, slot: torch.Tensor) -> None:
        self.slot = slot
        self.base = slot.data_ptr()
        self.used = 0

    def alloc(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor | None:
        itemsize = dtype.itemsize
        numel = 1
        for s in shape:
            numel *= s
        start = _align(self.used)
        end = start + numel * itemsize
        if end > self.slot.numel():
            return None
        self.used = end
        return self.slot[start:end].view(dtype).view(shape)

    def alloc_like(self, t: torch.Tensor) -> torch.Tensor | None:
        """Room for a copy of `t` with torch's preserve_format layout: `t`'s own strides
        when it is dense (channels_last, permuted), as torch's workers deliver them, else
        contiguous in its suggested memory format."""
        flat = self.alloc(t.dtype, (t.numel(),))
        if flat is None:
            return None
        if t.is_contiguous():
            return flat.view(t.shape)
        return flat.as_strided(t.shape, torch.empty_like(t, device="meta").stride())

    def offset_of(self, t: torch.Tensor) -> int | None:
        """Where `t` starts in this slot, or None when `t` is not stored in it."""
        if t.device.type != "cpu" or t.layout != torch.strided:
            return None
        if t.untyped_storage().data_ptr() != self.slot.untyped_storage().data_ptr():
            return None
        offset = t.data_ptr() - self.base
        return offset if 0 <= offset < self.slot.numel() else None


def _stack_into_slot(arena: _Arena | None, batch: Any, *, collate_fn_map: Any = None) -> Any:
    """torch's tensor collation, with the result stacked into the slot."""
    elem = batch[0]
    if elem.is_nested or elem.layout != torch.strided or elem.device.type != "cpu":
        return collate_tensor_fn(batch, collate_fn_map=collate_fn_map)  # torch's errors
    shape = (len(batch), *elem.shape)
    out = arena.alloc(elem.dtype, shape) if arena is not None else None
    if out is None:  # like torch's workers: an output of the first element's dtype
        out = torch.empty(shape, dtype=elem.dtype)
    return torch.stack(batch, 0, out=out)


class _TensorsByReference(pickle.Pickler):
    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors: list[torch.Tensor] = []
        self._ids: dict[int, int] = {}  # id(object) -> its persistent id

    def persistent_id(self, obj: Any) -> int | None:
        if isinstance(obj, torch.Tensor) and type(obj) is torch.Tensor:
            return self._set_aside(obj)
        return None

    def _set_aside(self, obj: Any) -> int:
        """`obj`'s persistent id. An object met twice is set aside once, so that it comes
        back as one object, as pickle's memo would bring it back (persistent ids bypass
        the memo). `tensors` keeps the objects, and so their ids, alive."""
        pid = self._ids.get(id(obj))
        if pid is None:
            pid = self._ids[id(obj)] = len(self.tensors)
            self.tensors.append(obj)
        return pid


class _TensorsFromList(pickle.Unpickler):
    """Unpickles with the objects a pickler set aside by persistent id put back."""

    def __init__(self, file: Any, tensors: list[Any]) -> None:
        super().__init__(file)
        self.tensors = tensors

    def persistent_load(self, pid: Any) -> Any:
        return self.tensors[pid]


class _WorkerState:
    """A worker process's side of its ring."""

    def __init__(self, fd: int, nslots: int, share: int) -> None:
        self.fd = fd
        self.nslots = nslots
        self.share = share  # bytes of its memfd this worker may fill (0: no limit)
        self.ring: Any = None  # ferry._C.SharedRing, made at the first batch
        self.ring_offset = 0
        info = get_worker_info()
        self.worker = info.id
        self.rng = RngWatcher()
        self.iterable = isinstance(info.dataset, IterableDataset)

    def claim(self) -> tuple[int, _Arena | None]:
        if self.ring is None:
            return -1, None
        slot = self.ring.claim()
        return (slot, _Arena(self.ring.slot_tensor(slot))) if slot >= 0 else (-1, None)

    def grow_ring(self, need: int) -> None:
        """A ring whose slots hold `need` bytes with room to spare: at the first batch, and
        again (further along the same file) when a batch outgrows the slots. Slots of
        the earlier ring stay valid while the consumer holds them."""
        slot_bytes = _align(max(int(need * _HEADROOM), _PAGE), _PAGE)
        offset = 0
        if self.ring is not None:
            offset = _align(self.ring_offset + self.ring.mapped_bytes, _PAGE)
        C = _ext.load()
        if self.share and offset + _PAGE + slot_bytes * self.nslots > self.share:
            fmt = C.format_bytes
            raise RuntimeError(
                f"ferry's memory budget is exhausted: worker {self.worker} needs a shared ring "
                f"of {self.nslots} slots of {fmt(slot_bytes)} for batches of {fmt(need)} "
                f"({fmt(offset)} already used by earlier, smaller rings), beyond its "
                f"{fmt(self.share)} share of memory_budget (one share per worker). Raise "
                "memory_budget, or lower prefetch_factor or the batch size"
            )
        self.ring = C.SharedRing.create(self.fd, offset, slot_bytes, self.nslots)
        self.ring_offset = offset

    def pack(self, data: Any, slot: int, arena: _Arena | None) -> Packed:
        buf = io.BytesIO()
        pickler = _TensorsByReference(buf)
        pickler.dump(data)
        tensors = pickler.tensors
        own_slot = -1  # a slot claimed here, to give back if packing fails
        outgrown = None  # (ring, slot) this batch was collated into but does not fit
        need, placed = _slot_layout(tensors, arena)
        if need and (self.ring is None or need > self.ring.slot_bytes):
            if slot >= 0:
                outgrown = (self.ring, slot)
            self.grow_ring(need)
            slot, arena = own_slot, _ = self.claim()
            need, placed = _slot_layout(tensors, arena)
        try:
            refs: list[Any] = []
            copied: dict[tuple[int, int, int], int] = {}
            for t in tensors:  # tensors in an outgrown slot are copied into the new one
                ref = self._reference(t, arena, placed, copied)
                refs.append(ref if ref is not None else pickle.dumps(t, pickle.HIGHEST_PROTOCOL))
        except BaseException:
            self.release(own_slot)
            raise
        finally:
            if outgrown is not None:
                outgrown[0].set(outgrown[1], _ext.load().SlotState.FREE)
        if slot >= 0:
            self.ring.set(slot, _ext.load().SlotState.READY)
        return Packed(self.worker, self.ring_offset, slot, buf.getvalue(), refs)

    @staticmethod
    def _reference(t: torch.Tensor, arena: _Arena | None,
                   placed: dict[int, tuple[int, int, int]],
                   copied: dict[tuple[int, int, int], int]) -> tuple | None:
        """Where `t` lives in the slot (copied there if needed); None to pickle it.
        Tensors `placed` in one range of a storage are views of one copy of that range
        (`copied`: range -> its offset in the slot)."""
        if arena is None or not _fits_a_slot(t):
            return None
        if t.numel() == 0:  # no bytes to place (and its data pointer may be null)
            return (0, t.dtype, list(t.shape), list(t.stride()))
        offset = arena.offset_of(t)
        cluster = placed.get(id(t)) if offset is None else None
        if cluster is not None:
            storage = t.untyped_storage()
            at = copied.get(cluster)
            if at is None:
                _, lo, hi = cluster
                dst = arena.alloc(torch.uint8, (hi - lo,))
                if dst is not None:
                    whole = torch.empty(0, dtype=torch.uint8).set_(storage)
                    dst.copy_(whole[lo:hi])
                    at = copied[cluster] = arena.offset_of(dst)
            if at is not None:
                offset = at + (t.data_ptr() - storage.data_ptr() - cluster[1])
                return (offset, t.dtype, list(t.shape), list(t.stride()))
        if offset is None or any(s < 0 for s in t.stride()):
            dst = arena.alloc_like(t)
            if dst is None:
                return None
            dst.copy_(t)
            t, offset = dst, arena.offset_of(dst)
        return (offset, t.dtype, list(t.shape), list(t.stride()))

    def release(self, slot: int) -> None:
        if slot >= 0:
            self.ring.set(slot, _ext.load().SlotState.FREE)


def _slot_layout(tensors: list[torch.Tensor],
                 arena: _Arena | None) -> tuple[int, dict[int, tuple[int, int, int]]]:
    """The bytes a batch's tensors need in a slot, and where tensors (outside the slot)
    that overlap in one storage go: id(tensor) -> (storage, lo, hi), the byte range of
    that storage copied once into the slot, so that they stay views of one another as
    torch's workers keep them (they share each storage whole). A range more than twice
    the size of its tensors (views scattered over a big storage) is not copied: its
    tensors are copied each on its own."""
    by_storage: dict[int, list[torch.Tensor]] = {}
    need = 0
    for t in tensors:
        if not _fits_a_slot(t):
            continue
        if t.numel() == 0 or (arena is not None and arena.offset_of(t) is not None):
            need += _align(t.numel() * t.element_size())
        else:  # keyed by the storage itself: two storages may start at one address
            by_storage.setdefault(t.untyped_storage()._cdata, []).append(t)
    placed: dict[int, tuple[int, int, int]] = {}
    for key, views in by_storage.items():
        base = views[0].untyped_storage().data_ptr()
        views.sort(key=lambda t: t.data_ptr())
        k = 0
        while k < len(views):  # a sweep over the views' byte ranges, in clusters that overlap
            lo = views[k].data_ptr() - base
            hi = lo + _extent(views[k])
            end = k + 1
            while end < len(views) and views[end].data_ptr() - base < hi:
                hi = max(hi, views[end].data_ptr() - base + _extent(views[end]))
                end += 1
            cluster = views[k:end]
            own = sum(_align(t.numel() * t.element_size()) for t in cluster)
            lo -= lo % _ALIGN  # each view keeps its alignment
            if len(cluster) > 1 and hi - lo <= 2 * own:
                for t in cluster:
                    placed[id(t)] = (key, lo, hi)
                need += _align(hi - lo)
            else:
                need += own
            k = end
    return need, placed


def _extent(t: torch.Tensor) -> int:
    """Bytes from `t`'s first element to the end of its last."""
    return (1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True))) * (
        t.element_size()
    )


def _fits_a_slot(t: torch.Tensor) -> bool:
    """Whether `t` can travel as bytes in a slot (else it is pickled as it is)."""
    return (
        t.layout == torch.strided
        and not t.is_nested
        and t.device.type == "cpu"
        and not t.is_quantized
        and not t.requires_grad
        and not t.is_conj()
        and not t.is_neg()
    )


class RingCollate:
    """The collate_fn the workers run: the loader's own, with its tensors landing in the
    worker's ring and the batch sent as a Packed."""

    def __init__(self, collate_fn: Any, fds: list[int], nslots: int,
                 batch_size: int | None = None, share: int = 0) -> None:
        self.collate_fn = collate_fn
        self.fds = fds
        self.nslots = nslots
        self.batch_size = batch_size
        self.share = share
        self._state: _WorkerState | None = None

    def __reduce__(self) -> Any:
        # Under spawn/forkserver the memfds travel with the worker's arguments (fork
        # inherits them and never pickles this).
        from multiprocessing import reduction

        fds = [reduction.DupFd(fd) for fd in self.fds]
        return (_rebuild_ring_collate,
                (self.collate_fn, fds, self.nslots, self.batch_size, self.share))

    def __call__(self, batch: Any) -> Packed:
        if self._state is None:
            info = get_worker_info()
            if info is None:
                raise RuntimeError("ferry's ring collation runs in DataLoader workers only")
            self._state = _WorkerState(self.fds[info.id], self.nslots, self.share)
        state = self._state
        started = time.monotonic()
        slot, arena = state.claim()
        packed = None
        try:
            if self.collate_fn is default_collate:
                fn_map = {**default_collate_fn_map, torch.Tensor: partial(_stack_into_slot, arena)}
                data = collate(batch, collate_fn_map=fn_map)
            else:
                data = self.collate_fn(batch)
            packed = state.pack(data, slot, arena)
            packed.rng = state.rng.changed()
            if _stream is not None:
                packed.stream = _stream.report()
            if state.iterable:
                # torch's fetcher stops asking an iterator that fell short of a batch
                packed.ended = self.batch_size is not None and len(batch) < self.batch_size
            packed.collate_started, packed.finished = started, time.monotonic()
            return packed
        except BaseException:
            # once packed, the batch is in the slot pack published (in a larger ring
            # when it outgrew the one it was collated into)
            state.release(packed.slot if packed is not None else slot)
            raise


def _rebuild_ring_collate(collate_fn: Any, dupfds: list[Any], nslots: int,
                          batch_size: int | None, share: int) -> RingCollate:
    return RingCollate(collate_fn, [d.detach() for d in dupfds], nslots, batch_size, share)


# The worker's dataset stream (made by WorkerInit, in worker processes only).
_stream: WorkerStream | None = None


class WorkerInit:
    """The worker_init_fn the workers run: makes the worker dump its Python stacks into a
    file of the main process's on SIGUSR1 (for the watchdog), runs the loader's, then, in
    a resumed loader, puts the worker where the original one was (its generators, its
    dataset's stream)."""

    def __init__(self, init_fn: Any, stack_fds: list[int], resume: list[Any] | None) -> None:
        self.init_fn = init_fn
        self.stack_fds = stack_fds
        self.resume = resume

    def __reduce__(self) -> Any:
        from multiprocessing import reduction

        fds = [reduction.DupFd(fd) for fd in self.stack_fds]
        return (_rebuild_worker_init, (self.init_fn, fds, self.resume))

    def __call__(self, worker_id: int) -> None:
        global _stream
        faulthandler.register(STACK_SIGNAL, file=self.stack_fds[worker_id], all_threads=True)

        dataset = get_worker_info().dataset
        # this process only: torch's worker loop wraps a fetch's error in the wrapper
        # its module names, which then also records the sample that raised
        worker_module.ExceptionWrapper = SampleExceptionWrapper
        if isinstance(dataset, IterableDataset):
            worker_module._IterableDatasetStopIteration = _EndedWithState  # this process only
        _stream = WorkerStream(dataset)
        if self.init_fn is not None:
            self.init_fn(worker_id)
        if self.resume is not None:
            _stream.resume(self.resume[worker_id])


def _rebuild_worker_init(init_fn: Any, dupfds: list[Any], resume: list[Any] | None) -> WorkerInit:
    return WorkerInit(init_fn, [d.detach() for d in dupfds], resume)


# Types multiprocessing's pickler reduces its own way but plain pickle just as well.
_PLAIN_TYPES = (partial, types.MethodType, type(str.join))


class _SetAside(_TensorsByReference):
    """Pickles everything but what multiprocessing's pickler sends its own way to the
    process being started (tensors and storages shared through shared memory,
    connections and sockets with their descriptors), which it collects instead."""

    def persistent_id(self, obj: Any) -> int | None:
        if isinstance(obj, (torch.Tensor, torch.UntypedStorage, torch.TypedStorage)) or (
            type(obj) in _ForkingPickler._extra_reducers and type(obj) not in _PLAIN_TYPES
        ):
            return self._set_aside(obj)
        return None


class _SharesWith(pickle.Pickler):
    """Pickles into nothing, to find whether an object reaches one that a pickled dataset
    holds (`memo`): in a worker the two must stay one object."""

    _ATOMS = (str, bytes, int, float, complex, bool, type(None), tuple, frozenset, type,
              types.FunctionType, types.BuiltinFunctionType, types.ModuleType)

    def __init__(self, memo: Any) -> None:
        super().__init__(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
        self.dataset_objects = memo
        self.shares = False

    def persistent_id(self, obj: Any) -> int | None:
        if id(obj) in self.dataset_objects and not isinstance(obj, self._ATOMS):
            self.shares = True
            return 0
        return None


class _ShippedDataset:
    """The dataset as workers started by spawn or forkserver receive it. torch pickles it
    into each worker's start-up pipe in turn, and a dataset larger than the pipe makes
    each start wait until that worker has imported torch and read it. Here it is pickled
    once, into a memfd each worker reads itself, so the workers start side by side; what
    it holds that multiprocessing sends its own way (tensors, shared as torch shares
    them; connections) still travels with each worker's arguments.
    Only what plain pickle takes whole goes this way (see ship_dataset)."""

    def __init__(self, fd: int, aside: list[Any]) -> None:
        self.fd = fd
        self.aside = aside

    def __reduce__(self) -> Any:
        from multiprocessing import reduction

        return (_unship_dataset, (reduction.DupFd(self.fd), self.aside))

    def close(self) -> None:
        os.close(self.fd)


def _unship_dataset(dupfd: Any, aside: list[Any]) -> Any:
    fd = dupfd.detach()
    try:
        with mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ) as pickled:
            return _TensorsFromList(pickled, aside).load()
    finally:
        os.close(fd)


def ship_dataset(loader: Any) -> _ShippedDataset | None:
    """The dataset pickled once for workers that are not forked, or None to let torch
    pickle it for each worker: with fork (nothing is pickled), for datapipes (torch's
    iterator changes them first), when the collate_fn or worker_init_fn reaches an object
    the dataset holds (torch pickles them together, so in a worker they stay one
    object), and when plain pickle cannot take it (a lock, which multiprocessing only
    passes to the process being started).
    """
    from torch.utils.data.datapipes.datapipe import IterDataPipe, MapDataPipe

    dataset = loader.dataset
    context = loader.multiprocessing_context or multiprocessing.get_context()
    if context.get_start_method() == "fork" or isinstance(dataset, (IterDataPipe, MapDataPipe)):
        return None
    fd = os.memfd_create("ferry-dataset")
    try:
        with open(fd, "wb", closefd=False) as f:
            pickler = _SetAside(f)
            pickler.dump(dataset)
        finder = _SharesWith(pickler.memo.copy())
        finder.dump((loader.collate_fn, loader.worker_init_fn))
        if finder.shares:
            os.close(fd)
            return None
    except BaseException as e:
        os.close(fd)
        if isinstance(e, Exception):
            return None  # torch's own pickling raises the error, if any
        raise
    return _ShippedDataset(fd, pickler.tensors)


class _LoaderWithCollate:
    """The loader as torch's iterator reads it, but with ferry's collate_fn and
    worker_init_fn, without torch's pin-memory thread (ferry pins in C++ as batches leave
    their slots), and with the dataset shipped once when given."""

    pin_memory = False

    def __init__(self, loader: Any, collate_fn: Any, worker_init_fn: Any,
                 shipped: _ShippedDataset | None) -> None:
        self._loader = loader
        self.collate_fn = collate_fn
        self.worker_init_fn = worker_init_fn
        self.dataset = shipped if shipped is not None else loader.dataset

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


# Iterators with ring fds open, and the one whose workers are being started now.
_live_iterators: weakref.WeakSet[WorkerIter] = weakref.WeakSet()
_starting: WorkerIter | None = None


def _after_fork_in_child() -> None:
    """A forked child keeps only the ring fds of the iterator that started it (if any):
    the others' would keep their shared memory alive as long as the child lives."""
    for it in list(_live_iterators):
        if it is not _starting:
            fds = it._ring_fds + it._stack_fds
            it._ring_fds, it._stack_fds = [], []
            for fd in fds:
                os.close(fd)
            # The parent's workers are not this process's to stop: when this copy of the
            # iterator is collected here, its shutdown must not message or join them.
            it._shutdown = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def _pin_memory_setting(loader: Any) -> bool:
    """Whether batches are pinned, and torch's warnings about it (its iterator no longer
    sees pin_memory=True, see _LoaderWithCollate)."""
    if loader.pin_memory and loader.pin_memory_device:
        warnings.warn(
            "pin_memory_device is deprecated, the current accelerator will be used as the "
            f"device,ignore pin_memory_device='{loader.pin_memory_device}'.",
            stacklevel=4,
        )
    if loader.pin_memory and not torch.accelerator.is_available():
        warnings.warn(
            "'pin_memory' argument is set as true but no accelerator is found, then device "
            "pinned memory won't be used.",
            stacklevel=4,
        )
    pin = bool(loader.pin_memory) and torch.accelerator.is_available()
    accelerator = torch.accelerator.current_accelerator() if pin else None
    if accelerator is not None and accelerator.type == "mps":  # torch does not pin there
        warnings.warn(
            "'pin_memory' argument is set as true but not supported on MPS now, device "
            "pinned memory won't be used.",
            stacklevel=4,
        )
        return False
    return pin


class WorkerIter(LoaderIter, _MultiProcessingDataLoaderIter):
    """torch's multiprocessing iterator, with batches travelling through shared rings."""

    path = "workers"  # last_produce_s etc.: the last batch's times in its worker

    def __init__(self, loader: Any, budget: Any = None) -> None:
        C = _ext.load()
        n = loader.num_workers
        self._init_delivery(loader, budget)  # the rings mapped here are charged to budget
        self._init_resume(loader)
        resume = self._resume or {}
        self._worker_states = list(resume.get("workers") or [None] * n)
        # a worker that reported its dataset's stream: its iterator keeps its position
        self._stream_reported = any(s and s.get("stream") for s in self._worker_states)
        # the worker the original would have asked for its next batch
        self._cycle_advance = resume.get("next_worker") or 0
        self._ring_fds = [os.memfd_create(f"ferry-ring-{i}") for i in range(n)]
        self._stack_fds = [os.memfd_create(f"ferry-stack-{i}") for i in range(n)]
        self._rings: dict[tuple[int, int], Any] = {}  # (worker, ring offset) -> ring
        self._held_slot = C.SlotState.HELD
        nslots = min((loader.prefetch_factor or 2) + _EXTRA_SLOTS, 256)
        # The sampler indices of each task in flight, to name them when it fails.
        self._task_indices: dict[int, Any] = {}
        self._sent_at: dict[int, float] = {}  # task -> when it was sent (time.monotonic)
        self._worker_done_at: dict[int, float] = {}  # worker -> when its last batch was done
        self._ended_workers: set[int] = set()  # workers whose IterableDataset ran out
        self._discarding = False  # True while torch drains a finished epoch
        self.copied_batches = 0  # batches copied out of their slot (the user held many)
        self._last_index: Any = None
        batch_size = loader.batch_size if loader.batch_sampler is not None else None
        share = max(1, loader.memory_budget // n) if loader.memory_budget else 0
        collate_fn = RingCollate(loader.collate_fn, self._ring_fds, nslots, batch_size, share)
        self._resume_ended = set(resume.get("ended_workers") or ())
        for_workers = worker_resumes(resume.get("workers"), self._resume_ended)
        self._end_states: dict[int, Any] = {}  # worker -> its _EndedWithState this epoch
        self._idle_workers: set[int] = set()  # resumed as ended, without being told to stop
        self._short_workers: set[int] = set()  # handed over a short batch this epoch
        global _starting
        _live_iterators.add(self)
        _starting = self  # its forked workers keep its ring fds (see _after_fork_in_child)
        shipped = None
        try:
            init_fn = WorkerInit(loader.worker_init_fn, self._stack_fds, for_workers)
            shipped = ship_dataset(loader)
            super().__init__(_LoaderWithCollate(loader, collate_fn, init_fn, shipped))
            # torch's SIGCHLD handler raises a worker's death wherever the main thread
            # happens to be: in the user's training step, or in this iterator between
            # two of its own checks, with a message that names no worker. ferry polls
            # its workers while it waits (_try_get_data), so a death is reported by the
            # next next(), naming the worker, and the handler is told not to watch them.
            self._unwatch_workers()
        except BaseException:
            self._unwatch_workers()  # torch's constructor failed after starting them
            self._close_ring_fds()
            raise
        finally:
            _starting = None
            if shipped is not None:  # the workers have their copies of the fd
                shipped.close()
                self._dataset = loader.dataset
        # not torch's _pin_memory, which would make it look for its pin thread; batches
        # for a device are staged by the device copy instead
        self._pin_batches = _pin_memory_setting(loader) and self._device is None

    def _unwatch_workers(self) -> None:
        if getattr(self, "_worker_pids_set", False):
            forget_worker_pids(id(self))
            self._worker_pids_set = False

    # --- batches --------------------------------------------------------------------
    def _next_index(self) -> Any:
        self._last_index = super()._next_index()
        return self._last_index

    def _try_put_index(self) -> None:
        while self._cycle_advance:  # a resumed epoch: the original's next worker first
            self._cycle_advance -= 1
            next(self._worker_queue_idx_cycle)
        for wid in sorted(self._resume_ended):  # ... and without those that had run out
            self._resume_ended.discard(wid)
            self._ended_workers.add(wid)
            self._workers_status[wid] = False  # no tasks; told to stop with the others
            self._idle_workers.add(wid)
        sent = self._send_idx
        super()._try_put_index()
        if self._send_idx != sent:
            self._sent_at[sent] = time.monotonic()
            if self._dataset_kind == _DatasetKind.Map:
                self._task_indices[sent] = self._last_index

    def _get_data(self) -> Any:
        try:
            idx, data = super()._get_data()
        except RuntimeError as exc:
            if "timed out" in str(exc):
                raise RuntimeError(self._describe_late_batch(str(exc))) from None
            raise
        indices = self._task_indices.pop(idx, None) if isinstance(idx, int) else None
        if isinstance(data, _IterableDatasetStopIteration):
            self._ended_workers.add(data.worker_id)
            if isinstance(data, _EndedWithState):  # applied once its batches are all out
                self._end_states[data.worker_id] = data
        if isinstance(data, Packed):
            data.task = idx
        if isinstance(data, Packed) and self._discarding:
            self._note_batch(data)
            data = self._unpack(data)  # and dropped: its slot is free again
        elif isinstance(data, ExceptionWrapper) and indices is not None:
            # torch names the worker; ferry adds what it was doing, and which sample raised
            # (after torch's sentence, which reraise() ends with a period)
            sample = getattr(data, "sample", None)
            data.where += (f". ferry: sample index {sample!r} raised (of the batch's sample "
                           f"indices {indices!r})" if sample is not None else
                           f". ferry: while fetching and collating sample indices {indices!r}")
        return idx, data

    def _process_data(self, data: Any, worker_idx: int) -> Any:
        # Batches are unpacked when they are handed over, not when they arrive: one that
        # arrived early waits in torch's reorder buffer as a Packed, so only batches the
        # user really holds count against the copy-out policy.
        data = super()._process_data(data, worker_idx)
        if isinstance(data, Packed):
            self._note_batch(data)
            if not self._in_order:
                self._yielded_task = data.task
            data = self._unpack(data, pinned=self._pin_batches)
            if self._pin_batches:  # the rest as torch pins it: tensors pickled by value,
                data = pin_memory(data, self._pin_memory_device)  # custom pin_memory()
        return data

    def _note_batch(self, packed: Packed) -> None:
        """A batch handed over (or discarded by torch): its stage times, and the worker's
        state after it, where a resumed worker would go on from."""
        sent = self._sent_at.pop(packed.task, None)
        begun = max(sent or 0.0, self._worker_done_at.get(packed.worker, 0.0))
        self._worker_done_at[packed.worker] = packed.finished
        self.last_collate_s = packed.finished - packed.collate_started
        self.last_fetch_s = max(0.0, packed.collate_started - begun) if sent else None
        self.last_produce_s = (self.last_fetch_s or 0.0) + self.last_collate_s
        if packed.ended:
            self._short_workers.add(packed.worker)
        if packed.rng is None and packed.stream is None:
            return
        now = dict(self._worker_states[packed.worker] or {})
        if packed.rng is not None:
            now["rng"] = packed.rng
        if packed.stream is not None:
            now["stream"] = packed.stream
            self._stream_reported = True
        self._worker_states[packed.worker] = now

    def _epoch_over(self) -> None:
        # where each worker whose data ran out stands for the next epoch
        for wid, end in sorted(self._end_states.items()):
            now = dict(self._worker_states[wid] or {})
            now["rng"] = end.rng
            if end.stream is not None:
                now["stream"] = end.stream
            self._worker_states[wid] = now
        self._end_states.clear()

    def _start_epoch(self) -> Any:
        self._epoch_over()  # an epoch left early: its ends arrived while torch drained it
        return super()._start_epoch()

    def _stream_has_state(self) -> bool:
        return self._stream_reported or has_state(self._dataset)

    def resume_snapshot(self) -> dict[str, Any]:
        state = super().resume_snapshot()
        if self._resume is None and state["epoch"] is not None and not state["epoch"].get("replay"):
            info = self._task_info.get(self._rcvd_idx)
            state["next_worker"] = info[0] if info else 0
            if self._dataset_kind == _DatasetKind.Iterable:
                # Only a short batch handed over says so: a worker's end may arrive ahead
                # of its last batches, and a worker resumed at its dataset's end ends.
                state["ended_workers"] = sorted(self._short_workers)
        return state

    def _unpack(self, packed: Packed, pinned: bool = False) -> Any:
        """The batch, its tensors views of its slot or (when the user already holds
        several, or `pinned`) copies; pinned: the copies page-locked (tensors pickled by
        value are pinned by the pin_memory walk that follows)."""
        tensors: list[torch.Tensor] = []
        if packed.slot >= 0:
            ring = self._ring(packed.worker, packed.ring_offset)
            refs = [r for r in packed.tensors if not isinstance(r, bytes)]
            copy = pinned or ring.count(self._held_slot) >= _MAX_HELD
            self.copied_batches += copy and not pinned
            in_slot = iter(ring.take(packed.slot, refs, copy, pinned))
            tensors = [pickle.loads(r) if isinstance(r, bytes) else next(in_slot)
                       for r in packed.tensors]
        else:
            tensors = [pickle.loads(r) for r in packed.tensors]
        return _TensorsFromList(io.BytesIO(packed.payload), tensors).load()

    def _ring(self, worker: int, offset: int) -> Any:
        ring = self._rings.get((worker, offset))
        if ring is None:
            ring = _ext.load().SharedRing.attach(self._ring_fds[worker], offset, self._budget)
            self._rings[(worker, offset)] = ring
        return ring

    def _reset(self, loader: Any, first_iter: bool = False) -> None:
        # torch forgets the batches that arrived early (its reorder buffer) and drains
        # the ones still in flight, dropping both: unpack them all first or as they come,
        # so that their slots are freed.
        task_info = getattr(self, "_task_info", {})
        for idx in sorted(task_info):
            info = task_info[idx]
            if len(info) == 2 and isinstance(info[1], Packed):
                self._note_batch(info[1])  # its worker's generators moved making it
                self._unpack(info[1])
        self._discarding = True
        self._sent_at.clear()  # task numbers start again at 0
        try:
            super()._reset(loader, first_iter)
        finally:
            self._discarding = False
        self._ended_workers.clear()  # persistent workers start the new epoch afresh
        self._idle_workers.clear()
        self._short_workers.clear()

    # --- failures -------------------------------------------------------------------
    def _describe_late_batch(self, what: str) -> str:
        """`what` (torch's timeout message), plus which worker holds the late batch, its
        sample indices and that worker's Python stack, dumped on request."""
        info = self._task_info.get(self._rcvd_idx)
        if not info:
            return what
        wid = info[0]
        indices = self._task_indices.get(self._rcvd_idx)
        lines = [f"{what}: batch {self._rcvd_idx} (sample indices {indices!r}) is with "
                 f"worker {wid} (pid {self._workers[wid].pid})."]
        stack = self._dump_stack(wid)
        lines.append(f"Its Python stack now:\n{stack}" if stack else "Its stack could not be read.")
        return "\n".join(lines)

    def _dump_stack(self, wid: int) -> str:
        fd = self._stack_fds[wid] if wid < len(self._stack_fds) else -1
        if fd < 0 or not self._workers[wid].is_alive():
            return ""
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)  # the worker writes through the same file offset
        os.kill(self._workers[wid].pid, STACK_SIGNAL)
        deadline, size = time.monotonic() + 2.0, -1
        while time.monotonic() < deadline:  # until the dump stops growing
            time.sleep(0.05)
            now = os.fstat(fd).st_size
            if now and now == size:
                break
            size = now
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace").strip()

    def _try_get_data(self, timeout: float = MP_STATUS_CHECK_INTERVAL) -> tuple[bool, Any]:
        # torch checks on its workers every 5 s; a dead worker is reported within
        # _POLL_SECONDS here, naming its exit code or signal.
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                ok, data = super()._try_get_data(max(0.0, min(_POLL_SECONDS, left)))
            except RuntimeError as torch_says:  # torch's own check of its workers
                self._raise_if_a_worker_died(torch_says)
                raise
            if ok:
                return ok, data
            self._raise_if_a_worker_died()
            if left <= _POLL_SECONDS:
                return False, None

    def _raise_if_a_worker_died(self, cause: BaseException | None = None) -> None:
        """Raises naming the first dead worker. With `cause` (torch already reported a
        death and marked the worker unavailable) every worker counts."""
        for wid, w in enumerate(self._workers):
            # torch marks a worker unavailable when its iterable ended (it then exits
            # normally) and when it reports it dead: only the latter counts here.
            if wid in self._ended_workers or (cause is None and not self._workers_status[wid]):
                continue
            if not w.is_alive():  # polls, so the exit code is known
                raise RuntimeError(worker_death(wid, w.pid, w.exitcode)) from cause

    # --- shutdown -------------------------------------------------------------------
    def _shutdown_workers(self) -> None:
        # torch tells the workers to stop through its index queues, then waits up to 5 s
        # for each. When the iterator dies in a reference cycle (an exception's traceback
        # is one), the garbage collector has already finalized those queues, the message
        # never leaves, and each worker costs the full 5 s. Here workers get
        # _STOP_GRACE_SECONDS in all to exit on their own, then are terminated.
        # (torch's pin-memory thread, which would have to stop first, never runs here.)
        for wid in self._idle_workers:  # so that torch tells them to stop too
            self._workers_status[wid] = True
        self._idle_workers.clear()
        if (
            not self._shutdown
            and not python_exiting()
        ):
            self._workers_done_event.set()
            for wid, q in enumerate(self._index_queues):
                if self._workers_status[wid] or self._persistent_workers:
                    q.put(None)
            deadline = time.monotonic() + _STOP_GRACE_SECONDS
            for w in self._workers:
                w.join(timeout=max(0.0, deadline - time.monotonic()))
            for w in self._workers:
                if w.is_alive():
                    w.terminate()
        super()._shutdown_workers()
        if self._shutdown:  # torch really stopped the workers (not an epoch's end)
            self._join_feeders()
            self._close_ring_fds()

    def _join_feeders(self) -> None:
        # torch closes the index queues without joining their feeder threads, which then
        # end (closing their pipe's two fds) whenever they are next scheduled: after the
        # iterator has gone, on a busy machine. Once closed, with the workers gone, they
        # end at once, unless one is stuck writing into a pipe no worker reads any more
        # (torch's reason not to join them): that one is left after the grace.
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for q in getattr(self, "_index_queues", []):
            feeder = getattr(q, "_thread", None)  # started by the queue's first put()
            if feeder is not None and feeder is not threading.current_thread():
                feeder.join(timeout=max(0.0, deadline - time.monotonic()))

    def _close_ring_fds(self) -> None:
        fds, self._ring_fds = getattr(self, "_ring_fds", []), []
        fds += getattr(self, "_stack_fds", [])
        self._stack_fds = []
        for fd in fds:
            os.close(fd)
        for ring in getattr(self, "_rings", {}).values():
            ring.release_unheld()  # only batches the user still holds keep their memory
        self._rings = {}
