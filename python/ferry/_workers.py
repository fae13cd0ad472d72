"""Worker processes: torch's worker loop in each, driven by a ferry producer, batches
travelling back through shared-memory rings.

Each worker runs torch's own worker loop, so seeding, get_worker_info, worker_init_fn,
an IterableDataset's sharding and end, a persistent worker's new epoch and the wrapping
of errors are torch's. ferry changes how a batch travels (_ring_collate.py) and what the
workers start with (_worker_start.py). Here is the main process's side of the protocol,
as torch's multiprocessing iterator speaks it (its index sending is the specification
ferry's parity rests on): which worker is sent each batch's indices, the order batches
are handed over in, a worker whose data ran out, a persistent iterator's new epoch. Also
here: the watch over the workers (a death is named within a tenth of a second; a late
batch's worker and its Python stack follow torch's timeout sentence), their shutdown,
fork hygiene, and each worker's part of resume.
"""

from __future__ import annotations

import io
import itertools
import os
import pickle
import threading
import time
import warnings
import weakref
from functools import partial
from pickle import PicklingError
from queue import Empty
from typing import Any

import torch
from torch.utils.data import IterDataPipe, MapDataPipe

from . import _ext
from ._errors import timed_out, worker_death
from ._iter import NONE_LEFT, WORKER_ENDED, Done, ProducerIter
from ._resume import has_state, worker_resumes
from ._ring_collate import EndedWithState, Packed, RingCollate, TensorsFromList
from ._torch_compat import (
    ExceptionWrapper,
    _DatasetKind,
    _IterableDatasetStopIteration,
    _ResumeIteration,
    _sharding_worker_init_fn,
    _worker_loop,
    python_exiting,
)
from ._worker_start import STACK_SIGNAL, WorkerInit, ship_dataset

# Slots beyond the prefetched batches: the batch the user holds, one being collated, spare.
_EXTRA_SLOTS = 4
# Views of a worker's slots the user may hold before further batches are copied out.
_MAX_HELD = 2
# How often a waiting consumer checks that the workers are alive.
_POLL_SECONDS = 0.1
# How long stopping workers may take to exit on their own before they are terminated.
_STOP_GRACE_SECONDS = 1.0


def process_iter(loader: Any, budget: Any) -> ProcessIter:
    return ProcessIter(loader, budget)


class ProcessIter(ProducerIter):
    """The one iterator over worker processes, with their part of resume: each worker's
    generators and dataset stream after its last batch handed over, which worker the
    next batch is asked of, and which workers' data had run out."""

    _producer: ProcessProducer

    def __init__(self, loader: Any, budget: Any) -> None:
        super().__init__(loader, lambda it: ProcessProducer(it, loader),
                         loader.prefetch_factor * loader.num_workers, budget)

    @property
    def copied_batches(self) -> int:
        """Batches copied out of their slot (the user held many)."""
        return self._producer.copied_batches

    def _start_epoch(self) -> Any:
        self._producer.apply_end_states()  # an epoch left early: its ends came in the drain
        return super()._start_epoch()

    def _epoch_over(self) -> None:
        self._producer.apply_end_states()

    def _stream_has_state(self) -> bool:
        return self._producer.stream_reported or has_state(self._dataset)

    def resume_snapshot(self) -> dict[str, Any]:
        state = super().resume_snapshot()
        if self._resume is None and state["epoch"] is not None and not state["epoch"].get("replay"):
            state["next_worker"] = self._producer.next_worker()
            if self._dataset_kind == _DatasetKind.Iterable:
                # Only a short batch handed over says so: a worker's end may arrive ahead
                # of its last batches, and a worker resumed at its dataset's end ends.
                state["ended_workers"] = sorted(self._producer.short_workers)
        return state


# Producers with ring fds open, and the one whose workers are being started now.
_live_producers: weakref.WeakSet[ProcessProducer] = weakref.WeakSet()
_starting: ProcessProducer | None = None


def _after_fork_in_child() -> None:
    """A forked child keeps only the ring fds of the producer that started it (if any):
    the others' would keep their shared memory alive as long as the child lives."""
    for producer in list(_live_producers):
        if producer is not _starting:
            producer.forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ProcessProducer:
    """`num_workers` processes running torch's worker loop, asked for batches in torch's
    turn and answering through shared-memory rings."""

    path = "workers"  # last_produce_s etc.: the last batch's times in its worker
    stock_indices = False

    def __init__(self, it: ProcessIter, loader: Any) -> None:
        n = self._n = loader.num_workers
        self._ordered = loader.in_order
        self._persistent = loader.persistent_workers
        self._iterable = it._dataset_kind == _DatasetKind.Iterable
        self._max_tasks = loader.prefetch_factor * n
        self._wait_limit = loader.timeout if loader.timeout > 0 else None
        self._pin = it._pin_memory and it._device is None  # not for a device: staged there
        self._budget = it._budget
        self._held_slot = _ext.load().SlotState.HELD
        self.copied_batches = 0
        self._procs: list[Any] = []
        self._queues: list[Any] = []  # each worker's index queue
        self._told_to_stop: set[int] = set()
        self._ring_fds = [os.memfd_create(f"ferry-ring-{i}") for i in range(n)]
        self._stack_fds = [os.memfd_create(f"ferry-stack-{i}") for i in range(n)]
        self._closed = False
        self._rings: dict[tuple[int, int], Any] = {}  # (worker, ring offset) -> ring
        self._sent_at: dict[int, float] = {}  # task -> when it was sent (time.monotonic)
        self._worker_done_at: dict[int, float] = {}  # worker -> when its last batch was done
        self._task_indices: dict[int, Any] = {}  # a map-style task's sample indices
        self._late: int | None = None  # the task take() waited for in vain
        self._new_epoch()

        # resume: each worker as the original left it, and the original's next worker
        resume = it._resume or {}
        self.worker_states = list(resume.get("workers") or [None] * n)
        # a worker that reported its dataset's stream: its iterator keeps its position
        self.stream_reported = any(s and s.get("stream") for s in self.worker_states)
        self._end_states: dict[int, Any] = {}  # worker -> its EndedWithState this epoch
        for _ in range(resume.get("next_worker") or 0):
            next(self._cycle)
        resumed_ended = set(resume.get("ended_workers") or ())
        for wid in resumed_ended:  # no tasks this epoch; told to stop with the others
            self._status[wid] = False

        global _starting
        _live_producers.add(self)
        _starting = self  # its forked workers keep its ring fds (see _after_fork_in_child)
        shipped = None
        try:
            batch_size = loader.batch_size if loader.batch_sampler is not None else None
            share = max(1, loader.memory_budget // n) if loader.memory_budget else 0
            nslots = min(loader.prefetch_factor + _EXTRA_SLOTS, 256)
            collate_fn = RingCollate(loader.collate_fn, self._ring_fds, nslots, batch_size, share)
            init_fn: Any = WorkerInit(loader.worker_init_fn, self._stack_fds,
                                      worker_resumes(resume.get("workers"), resumed_ended))
            dataset = it._dataset
            if isinstance(dataset, (IterDataPipe, MapDataPipe)):  # as torch shards them
                init_fn = partial(_sharding_worker_init_fn, init_fn, it._world_size, it._rank)
            shipped = ship_dataset(loader)
            context = loader.multiprocessing_context or torch.multiprocessing
            self._results = context.Queue()
            self._stop_event = context.Event()
            for wid in range(n):
                # torch's worker loop, with torch's arguments
                args = (it._dataset_kind, shipped or dataset, None, self._results,
                        self._stop_event, it._auto_collation, collate_fn, it._drop_last,
                        it._base_seed, init_fn, wid, n, self._persistent, it._shared_seed)
                self._start_worker(context, args)
        except BaseException:
            self.close()
            raise
        finally:
            _starting = None
            if shipped is not None:  # the workers have their copies of the fd
                shipped.close()

    def _start_worker(self, context: Any, args: tuple) -> None:
        index_queue = context.Queue()
        index_queue.cancel_join_thread()
        args = args[:2] + (index_queue,) + args[3:]
        worker = context.Process(target=_worker_loop, args=args, daemon=True)
        try:
            worker.start()
        except (TypeError, AttributeError, PicklingError):
            warnings.warn(  # torch's words
                "Got pickle error when attempting to start a worker Process. "
                "This might be because the worker Process arguments are not picklable. "
                "Python 3.14+ changed the multiprocessing start method in non-Mac POSIX "
                "platforms to 'forkserver', which requires the worker Process arguments to "
                "be picklable. You can also try multiprocessing.set_start_method('fork').",
                stacklevel=6,
            )
            raise
        self._queues.append(index_queue)
        self._procs.append(worker)

    def _new_epoch(self) -> None:
        """torch's bookkeeping of an epoch's tasks, afresh."""
        self._sent = self._received = 0  # the next task to send, to hand over
        self._tasks: dict[int, tuple] = {}  # task -> (worker,) or (worker, its answer)
        self._in_flight = 0  # sent, and neither handed over nor answered by a worker's end
        self._status = [True] * self._n  # which workers are sent tasks
        self._num_tasks = [0] * self._n  # each worker's tasks not handed over
        self._cycle = itertools.cycle(range(self._n))
        self._sent_at.clear()
        self._task_indices.clear()
        self.short_workers: set[int] = set()  # handed over a short batch this epoch

    # --- batches --------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, task: int, index: Any, position: int) -> bool:
        for _ in range(self._n):  # torch's choice: the next worker in turn still asked
            wid = next(self._cycle)
            if self._status[wid] and (  # with in_order=False, one below its share
                    self._ordered or self._num_tasks[wid] < self._max_tasks // sum(self._status)):
                break
        else:
            return False
        self._queues[wid].put((task, index))
        self._tasks[task] = (wid,)
        self._num_tasks[wid] += 1
        self._in_flight += 1
        self._sent = task + 1
        self._sent_at[task] = time.monotonic()
        if not self._iterable:
            self._task_indices[task] = index
        return True

    def take(self, timeout: float | None) -> Any:
        while True:
            # past the tasks that will not be answered: those of workers whose data ran out
            while self._received < self._sent:
                info = self._tasks.get(self._received)
                if info and (len(info) == 2 or self._status[info[0]]):
                    break
                self._tasks.pop(self._received, None)
                self._received += 1
            else:
                return NONE_LEFT
            task = self._received
            if len(self._tasks[task]) == 2:  # it arrived early
                wid, data = self._tasks.pop(task)
                self._received += 1
                return self._hand_over(task, wid, data)
            got = self._receive(timeout)
            if got is None:
                self._late = task
                return None
            idx, data = got
            if self._iterable and isinstance(data, _IterableDatasetStopIteration):
                self._worker_ended(data)
                return WORKER_ENDED
            if idx == task or not self._ordered:
                wid = self._tasks.pop(idx)[0]
                self._received += idx == task
                return self._hand_over(idx, wid, data)
            self._tasks[idx] += (data,)

    def _worker_ended(self, end: Any) -> None:
        """A worker's IterableDataset ran out: it is asked for nothing more this epoch
        (a persistent worker stays for the next one)."""
        if self._persistent:
            self._status[end.worker_id] = False
        else:
            self._stop_asking(end.worker_id)
        if isinstance(end, EndedWithState):  # applied once its batches are all out
            self._end_states[end.worker_id] = end
        self._in_flight -= 1

    def _hand_over(self, task: int, wid: int, data: Any) -> Done:
        self._num_tasks[wid] -= 1
        self._in_flight -= 1
        indices = self._task_indices.pop(task, None)
        if isinstance(data, ExceptionWrapper):
            self._sent_at.pop(task, None)
            if indices is not None:
                # torch names the worker; ferry adds what it was doing, and which sample
                # raised (after torch's sentence, which reraise() ends with a period)
                sample = getattr(data, "sample", None)
                data.where += (
                    f". ferry: sample index {sample!r} raised (of the batch's sample "
                    f"indices {indices!r})" if sample is not None else
                    f". ferry: while fetching and collating sample indices {indices!r}")
            data.reraise()
        fetch, collate = self._note_batch(task, data)
        batch = self._unpack(data, pinned=self._pin)
        return Done(batch, task, (fetch or 0.0) + collate, fetch, collate)

    def _note_batch(self, task: int, packed: Packed) -> tuple[float | None, float]:
        """A batch handed over (or dropped at an epoch's start): its worker's state after
        it, where a resumed worker would go on from; its fetch and collate times."""
        sent = self._sent_at.pop(task, None)
        begun = max(sent or 0.0, self._worker_done_at.get(packed.worker, 0.0))
        self._worker_done_at[packed.worker] = packed.finished
        if packed.ended:
            self.short_workers.add(packed.worker)
        if packed.rng is not None or packed.stream is not None:
            now = dict(self.worker_states[packed.worker] or {})
            if packed.rng is not None:
                now["rng"] = packed.rng
            if packed.stream is not None:
                now["stream"] = packed.stream
                self.stream_reported = True
            self.worker_states[packed.worker] = now
        fetch = max(0.0, packed.collate_started - begun) if sent else None
        return fetch, packed.finished - packed.collate_started

    def apply_end_states(self) -> None:
        """Where each worker whose data ran out stands for the next epoch."""
        for wid, end in sorted(self._end_states.items()):
            now = dict(self.worker_states[wid] or {})
            now["rng"] = end.rng
            if end.stream is not None:
                now["stream"] = end.stream
            self.worker_states[wid] = now
        self._end_states.clear()

    def next_worker(self) -> int:
        """The worker the next batch is asked of (the one that holds it)."""
        info = self._tasks.get(self._received)
        return info[0] if info else 0

    def _unpack(self, packed: Packed, pinned: bool = False) -> Any:
        """The batch, its tensors views of its slot or (when the user already holds
        several, or `pinned`) copies; pinned: the copies page-locked (tensors pickled by
        value are pinned by the iterator's pin_memory walk that follows)."""
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

    def drop(self, shared_seed: int | None) -> None:
        """A persistent iterator's new epoch, as torch begins it: every worker is told to
        begin again, and what the last epoch left (early batches, batches in flight) is
        dropped as it arrives, each slot freed and each worker's state kept."""
        for task, info in sorted(self._tasks.items()):
            if len(info) == 2 and isinstance(info[1], Packed):
                self._note_batch(task, info[1])
                self._unpack(info[1])
        self._new_epoch()
        for q in self._queues:
            q.put(_ResumeIteration(shared_seed))
        waiting = self._n
        while waiting:
            got = self._receive(self._wait_limit)
            if got is None:
                raise RuntimeError(timed_out(self._wait_limit))
            idx, data = got
            if isinstance(idx, _ResumeIteration):
                waiting -= 1
            elif isinstance(data, Packed):
                self._note_batch(idx, data)
                self._unpack(data)
            elif isinstance(data, EndedWithState):
                self._end_states[data.worker_id] = data

    # --- watching the workers -------------------------------------------------------
    def _receive(self, timeout: float | None) -> tuple[Any, Any] | None:
        """The workers' next answer, or None once `timeout` passed. A worker found dead
        while waiting raises, named (torch looks every 5 s; here every _POLL_SECONDS)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _POLL_SECONDS if deadline is None else deadline - time.monotonic()
            try:
                return self._results.get(timeout=max(0.0, min(_POLL_SECONDS, left)))
            except Empty:
                pass
            dead = [wid for wid, w in enumerate(self._procs)
                    if self._status[wid] and not w.is_alive()]  # (polls: exit codes known)
            for wid in dead:  # as torch: none of their tasks is waited for any more
                self._stop_asking(wid)
            if dead:
                w = self._procs[dead[0]]
                raise RuntimeError(worker_death(dead[0], w.pid, w.exitcode))
            if deadline is not None and left <= _POLL_SECONDS:
                return None

    def _stop_asking(self, wid: int) -> None:
        self._status[wid] = False
        self._told_to_stop.add(wid)
        self._queues[wid].put(None)

    def late(self) -> str:
        """Which worker holds the late batch, its sample indices and its Python stack,
        dumped on request."""
        info = self._tasks.get(self._late) if self._late is not None else None
        if not info:
            return ""
        wid = info[0]
        indices = self._task_indices.get(self._late)
        stack = self._dump_stack(wid)
        return (f": batch {self._late} (sample indices {indices!r}) is with worker {wid} "
                f"(pid {self._procs[wid].pid}).\n"
                + (f"Its Python stack now:\n{stack}" if stack else "Its stack could not be read."))

    def _dump_stack(self, wid: int) -> str:
        fd = self._stack_fds[wid] if wid < len(self._stack_fds) else -1
        if fd < 0 or not self._procs[wid].is_alive():
            return ""
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)  # the worker writes through the same file offset
        os.kill(self._procs[wid].pid, STACK_SIGNAL)
        deadline, size = time.monotonic() + 2.0, -1
        while time.monotonic() < deadline:  # until the dump stops growing
            time.sleep(0.05)
            now = os.fstat(fd).st_size
            if now and now == size:
                break
            size = now
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace").strip()

    # --- shutdown -------------------------------------------------------------------
    def close(self) -> None:
        """Stops the workers: told to stop, given _STOP_GRACE_SECONDS in all to exit on
        their own (torch gives each 5 s, and its message may never leave when the
        iterator dies in a reference cycle, its queues finalized first), then terminated;
        the queues' feeder threads joined, the rings' memory returned. Idempotent, and
        done again in full when interrupted (KeyboardInterrupt) part way."""
        if self._closed:
            return
        _live_producers.discard(self)
        try:
            if self._procs and not python_exiting():  # at exit, multiprocessing ends them
                self._stop_workers()
        finally:
            self._close_ring_fds()
        self._closed = True

    def _stop_workers(self) -> None:
        self._stop_event.set()
        for wid, q in enumerate(self._queues):
            if wid not in self._told_to_stop:
                self._told_to_stop.add(wid)
                q.put(None)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for w in self._procs:
            w.join(timeout=max(0.0, deadline - time.monotonic()))
        for w in self._procs:
            if w.is_alive():
                w.terminate()
                w.join(timeout=_STOP_GRACE_SECONDS)
        for q in self._queues:
            q.close()
        self._join_feeders()

    def _join_feeders(self) -> None:
        # A closed queue's feeder thread ends (closing its pipe's two fds) once it has
        # flushed, unless it is stuck writing into a pipe no worker reads any more: that
        # one is left after the grace (torch joins none of them).
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for q in self._queues:
            feeder = getattr(q, "_thread", None)  # started by the queue's first put()
            if feeder is not None and feeder is not threading.current_thread():
                feeder.join(timeout=max(0.0, deadline - time.monotonic()))

    def _close_ring_fds(self) -> None:
        fds = self._ring_fds + self._stack_fds
        self._ring_fds, self._stack_fds = [], []
        for fd in fds:
            os.close(fd)
        for ring in self._rings.values():
            ring.release_unheld()  # only batches the user still holds keep their memory
        self._rings = {}

    def forget_in_child(self) -> None:
        """In a forked child: the parent's workers are not this process's to stop, and
        its ring fds are closed."""
        self._closed = True
        fds = self._ring_fds + self._stack_fds
        self._ring_fds, self._stack_fds = [], []
        for fd in fds:
            os.close(fd)

    def __del__(self) -> None:
        if hasattr(self, "_closed"):  # (its constructor may have failed before)
            self.close()
