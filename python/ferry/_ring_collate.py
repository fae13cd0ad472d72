"""Ring collation: what runs in a worker process to put a batch in its ring slot, and
what the main process needs to read it back.

* each worker owns a ring of slots in a memfd (no /dev/shm entry, nothing to leak) that
  the main process created before starting it; the worker sizes it from its first
  batch;
* with the default collation, tensors are stacked straight into the worker's claimed
  slot; a custom ``collate_fn`` runs as in torch and its tensors are copied in;
* the batch goes back as a small pickle in which every tensor is a reference into the
  slot (``persistent_id``), so no file descriptor per tensor and no tensor bytes are
  pickled; a tensor that does not fit the slot is pickled by value;
* the main process (_workers.py) turns references into views of the slot, which is
  freed when the last view dies, or copies them out when the user already holds several
  batches of that worker, so a worker always finds a free slot.

A worker whose IterableDataset runs out says so with EndedWithState; both it and each
batch carry the worker's generators and its dataset's stream, for resuming.
"""

from __future__ import annotations

import io
import pickle
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from . import _ext
from ._resume import RngWatcher, WorkerStream, rng_blob
from ._torch_compat import (
    _IterableDatasetStopIteration,
    collate,
    collate_tensor_fn,
    default_collate_fn_map,
)

_PAGE = 4096
# A ring's slot is sized from a worker's first batch, with room for somewhat larger ones.
_HEADROOM = 1.25

# The worker's dataset stream (made by _worker_start.WorkerInit, in worker processes only).
worker_stream: WorkerStream | None = None


def _align(n: int, to: int = 0) -> int:
    """`n` rounded up to `to`, by default the slot's alignment (core/slot_layout.h)."""
    to = to or _ext.load().SLOT_ALIGN
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


@dataclass(frozen=True)
class EndedWithState(_IterableDatasetStopIteration):
    """torch's end-of-data marker, made in a worker whose IterableDataset ran out, with
    the worker's generators and its dataset's stream at that moment: where the worker's
    next epoch starts from (persistent workers)."""

    rng: Any = None
    stream: bytes | None = None

    def __post_init__(self) -> None:
        if worker_stream is None:
            return
        object.__setattr__(self, "rng", rng_blob())
        object.__setattr__(self, "stream", worker_stream.report(ended=True))


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


class TensorsByReference(pickle.Pickler):
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


class TensorsFromList(pickle.Unpickler):
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
        pickler = TensorsByReference(buf)
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
    C = _ext.load()
    for key, views in by_storage.items():
        base = views[0].untyped_storage().data_ptr()
        starts = [t.data_ptr() - base for t in views]
        extents = [C.strided_extent(t.shape, t.stride(), t.element_size()) for t in views]
        for lo, hi, members in C.overlap_clusters(starts, extents):  # the C++ rule
            cluster = [views[m] for m in members]
            own = sum(_align(t.numel() * t.element_size()) for t in cluster)
            if len(cluster) > 1 and hi - lo <= 2 * own:
                for t in cluster:
                    placed[id(t)] = (key, lo, hi)
                need += _align(hi - lo)
            else:
                need += own
    return need, placed


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
            if worker_stream is not None:
                packed.stream = worker_stream.report()
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

