"""Workers as threads of this process (``worker_type="thread"``).

For datasets whose ``__getitem__`` releases the GIL (image decoding, numpy on large
arrays, I/O) and for free-threaded Python. No processes, no pickling, no shared
memory: each thread runs torch's own fetcher (``__getitems__`` or ``__getitem__``, then
the collate_fn) on whole batches; batches are handed over in sampler order (or as they
complete with ``in_order=False``).

Differences from process workers, inherent to threads: the global random generators
(torch, numpy, random) are shared, so per-worker seeding cannot be reproduced, and
``get_worker_info()`` returns None. A ``__getitem__`` that never returns cannot be
killed: ``timeout`` raises, but the thread stays busy.
"""

from __future__ import annotations

import collections
import queue
import sys
import threading
import time
import traceback
import weakref
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ._errors import which_sample
from ._iter import Done, ProducerIter
from ._torch_compat import _DatasetKind, _MapDatasetFetcher

# How long stopping threads may take to finish the batch they are making.
_STOP_GRACE_SECONDS = 1.0


def thread_iter(loader: Any, budget: Any) -> ProducerIter:
    if loader._dataset_kind != _DatasetKind.Map:
        raise ValueError(
            "worker_type='thread' needs a map-style dataset; use process workers "
            "for an IterableDataset"
        )
    n = loader.num_workers
    return ProducerIter(loader, lambda it: ThreadProducer(it, n, loader.worker_init_fn),
                        loader.prefetch_factor * n, budget)


class _BatchMaker:
    """What the threads run: a batch, with its timings. It holds no reference to the
    iterator or its producer, so that the batches in flight do not keep them alive: the
    iterator's `del` (or its epoch's end) stops and joins the threads, not the garbage
    collector."""

    def __init__(self, loader_iter: Any) -> None:
        it = loader_iter
        self._collate_fn = it._collate_fn
        self._fetcher = _MapDatasetFetcher(
            it._dataset, it._auto_collation, self._timed_collate, it._drop_last
        )
        self._collate_time = threading.local()  # each thread's last collate_fn time
        # Which thread is making which batch, for the watchdog's report.
        self.fetching: dict[int, threading.Thread] = {}

    def _timed_collate(self, batch: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._collate_fn(batch)
        finally:
            self._collate_time.s = time.perf_counter() - started

    def __call__(self, task: int, index: Any) -> Done:
        """The batch, with the time to make it and the part of that spent in collate_fn."""
        self.fetching[task] = threading.current_thread()
        try:
            started = time.perf_counter()
            data = self._fetcher.fetch(index)
            produce = time.perf_counter() - started
            collate = self._collate_time.s
            return Done(data, task, produce, produce - collate, collate)
        finally:
            del self.fetching[task]


def _work(tasks: queue.SimpleQueue, init_fn: Any, worker_id: int) -> None:
    """A pool thread: worker_init_fn first, as torch's workers run it when they start,
    its error raised for the first task the thread takes (as a worker's is for its first
    batch); then the tasks, until told to stop (None)."""
    init_error = None
    if init_fn is not None:
        try:
            init_fn(worker_id)
        except BaseException as exc:
            exc.add_note(f"(in worker_init_fn({worker_id}) of a ferry thread worker)")
            init_error = exc
    while (item := tasks.get()) is not None:
        future, fn, args = item
        del item
        if not future.set_running_or_notify_cancel():
            continue  # dropped (an epoch's end, the iterator gone)
        if init_error is not None:
            future.set_exception(init_error)
            init_error = None
        else:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)
        # nothing of the task stays referenced while the thread waits for the next one
        del future, fn, args


def _stop(tasks: queue.SimpleQueue, pending: collections.deque,
          threads: list[threading.Thread]) -> None:
    for future, _ in pending:
        future.cancel()
    pending.clear()
    for _ in threads:
        tasks.put(None)
    # The threads are joined, so that none outlives the epoch or the iterator; one busy
    # in a batch that does not return cannot be stopped and is left after the grace.
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for thread in threads:
        # (a thread not started yet: its producer never had a task; one collected in a
        # pool thread does not join itself)
        if thread.ident is not None and thread is not threading.current_thread():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


class PoolProducer:
    """The part of a producer that makes its batches on `n` threads of its own, all
    started with the first task (each runs `init_fn` with its id first, as torch's
    workers run worker_init_fn; not before the first indices are drawn, which may seed
    the sampler from the global generator that an init_fn may reseed: torch's workers
    are processes, whose generators are their own): the batches in flight, taken in
    order or as they complete, dropped and stopped. Subclasses submit with `_start` and
    may follow a batch's hand-over (`_handing_over`, `_failed`)."""

    def __init__(self, n: int, in_order: bool, name: str, init_fn: Any = None) -> None:
        self._in_order = in_order
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: collections.deque[tuple[Future, Any]] = collections.deque()
        self._late: tuple[Future, Any] | None = None  # what take() waited for in vain
        self._threads = [threading.Thread(target=_work, args=(self._tasks, init_fn, k),
                                          name=f"{name}_{k}", daemon=True) for k in range(n)]
        self._finalizer = weakref.finalize(self, _stop, self._tasks, self._pending,
                                           self._threads)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _start(self, what: Any, fn: Any, *args: Any) -> None:
        """Queues ``fn(*args)``; `what` goes with it to `_handing_over` and `_failed`."""
        if self._threads[0].ident is None:  # the first task
            for thread in self._threads:
                thread.start()
        future: Future = Future()
        self._pending.append((future, what))
        self._tasks.put((future, fn, args))

    def take(self, timeout: float | None) -> Done | None:
        if self._in_order:
            k = 0
            try:
                self._pending[0][0].exception(timeout)
            except FutureTimeout:
                self._late = self._pending[0]
                return None
        else:
            done, _ = wait([f for f, _ in self._pending], timeout, FIRST_COMPLETED)
            if not done:
                self._late = self._pending[0]
                return None
            k = next(k for k, (f, _) in enumerate(self._pending) if f in done)
        future, what = self._pending[k]
        del self._pending[k]
        self._handing_over(what)
        try:
            return future.result()
        except Exception as exc:
            self._failed(exc, what)
            raise
        finally:
            # a raised error's traceback holds this frame, and the future holds the
            # error: a cycle that would keep the iterator (and its threads) alive
            del future

    def _handing_over(self, what: Any) -> None:
        """The batch `what` goes with is handed over, or its error raised."""

    def _failed(self, exc: Exception, what: Any) -> None:
        """The batch `what` goes with raised `exc`, which is raised next."""

    def drop(self, shared_seed: int | None) -> None:
        while self._pending:  # the last epoch's batches still in flight
            future, _ = self._pending.popleft()
            if not future.cancel():
                future.exception()

    def close(self) -> None:
        self._finalizer()


class ThreadProducer(PoolProducer):
    """`num_workers` threads, each running torch's own fetcher on whole batches."""

    path = "threads"
    stock_indices = False

    def __init__(self, it: Any, n: int, init_fn: Any) -> None:
        super().__init__(n, it._in_order, "ferry-worker", init_fn)
        self._make = _BatchMaker(it)

    def submit(self, task: int, index: Any, position: int) -> bool:
        self._start((task, index), self._make, task, index)
        return True

    def _failed(self, exc: Exception, what: Any) -> None:
        exc.add_note(f"(in a ferry thread worker, fetching sample indices {what[1]!r})"
                     f"{which_sample(exc)}")

    def late(self) -> str:
        """Which thread holds the late batch, and its stack."""
        if self._late is None:
            return ""
        _, (task, index) = self._late
        thread = self._make.fetching.get(task)
        frame = sys._current_frames().get(thread.ident) if thread is not None else None
        if frame is None:
            return f": sample indices {index!r} were not started yet"
        stack = "".join(traceback.format_stack(frame))
        return (f": sample indices {index!r} are with worker thread {thread.name}.\n"
                f"Its Python stack now:\n{stack}")
