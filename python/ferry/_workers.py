"""WorkerIter: torch's multiprocessing iterator, with batches travelling through
shared-memory rings.

torch's own multiprocessing iterator runs the workers (seeding, get_worker_info,
worker_init_fn, IterableDataset sharding, in_order, timeout, persistent workers and
error wrapping are torch's). ferry changes how a batch travels (_ring_collate.py) and
what the workers start with (_worker_start.py). Here: the iterator that reads batches
back from the rings, its failure reports and shutdown, fork hygiene and pin_memory.
"""

from __future__ import annotations

import io
import os
import pickle
import threading
import time
import warnings
import weakref
from typing import Any

import torch

from . import _ext
from ._errors import worker_death
from ._iter import LoaderIter
from ._resume import has_state, worker_resumes
from ._ring_collate import EndedWithState, Packed, RingCollate, TensorsFromList
from ._torch_compat import (
    MP_STATUS_CHECK_INTERVAL,
    ExceptionWrapper,
    _DatasetKind,
    _IterableDatasetStopIteration,
    _MultiProcessingDataLoaderIter,
    forget_worker_pids,
    pin_memory,
    python_exiting,
)
from ._worker_start import STACK_SIGNAL, LoaderWithCollate, WorkerInit, ship_dataset

# Slots beyond the prefetched batches: the batch the user holds, one being collated, spare.
_EXTRA_SLOTS = 4
# Views of a worker's slots the user may hold before further batches are copied out.
_MAX_HELD = 2
# How often a waiting consumer checks that the workers are alive.
_POLL_SECONDS = 0.1
# How long stopping workers may take to exit on their own before they are terminated.
_STOP_GRACE_SECONDS = 1.0


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
    sees pin_memory=True, see LoaderWithCollate)."""
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
        self._end_states: dict[int, Any] = {}  # worker -> its EndedWithState this epoch
        self._idle_workers: set[int] = set()  # resumed as ended, without being told to stop
        self._short_workers: set[int] = set()  # handed over a short batch this epoch
        global _starting
        _live_iterators.add(self)
        _starting = self  # its forked workers keep its ring fds (see _after_fork_in_child)
        shipped = None
        try:
            init_fn = WorkerInit(loader.worker_init_fn, self._stack_fds, for_workers)
            shipped = ship_dataset(loader)
            super().__init__(LoaderWithCollate(loader, collate_fn, init_fn, shipped))
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
            if isinstance(data, EndedWithState):  # applied once its batches are all out
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
        return TensorsFromList(io.BytesIO(packed.payload), tensors).load()

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
