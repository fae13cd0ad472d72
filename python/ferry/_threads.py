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
import itertools
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ._errors import which_sample
from ._resume import Resumable
from ._torch_compat import _BaseDataLoaderIter, _DatasetKind, _MapDatasetFetcher, pin_memory

# How long stopping threads may take to finish the batch they are making.
_STOP_GRACE_SECONDS = 1.0


class _BatchMaker:
    """What the threads run: a batch, with its timings. It holds no reference to the
    iterator, so that the batches in flight do not keep it alive: the iterator's `del`
    (or its epoch's end) stops and joins the threads, not the garbage collector."""

    def __init__(self, loader_iter: _BaseDataLoaderIter, init_fn: Any) -> None:
        it = loader_iter
        self._collate_fn = it._collate_fn
        self._fetcher = _MapDatasetFetcher(
            it._dataset, it._auto_collation, self._timed_collate, it._drop_last
        )
        self._collate_time = threading.local()  # each thread's last collate_fn time
        # worker_init_fn runs in each thread before its first batch, inside that batch's
        # task (not as the pool's initializer: a failing initializer breaks the pool and
        # the user would get BrokenThreadPool instead of the error). As in torch's
        # workers, its error is raised for the first batch the thread was given.
        self._init_fn = init_fn
        self._worker_ids = itertools.count()
        self._worker_ids_lock = threading.Lock()
        self._thread_started = threading.local()
        # Which thread is making which batch, for the watchdog's report.
        self.fetching: dict[int, threading.Thread] = {}

    def _timed_collate(self, batch: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._collate_fn(batch)
        finally:
            self._collate_time.s = time.perf_counter() - started

    def __call__(self, task: int, index: Any) -> tuple[Any, float, float]:
        """The batch, the time to make it and the part of that spent in collate_fn."""
        self.fetching[task] = threading.current_thread()
        try:
            if not getattr(self._thread_started, "done", False):
                self._thread_started.done = True
                with self._worker_ids_lock:
                    worker_id = next(self._worker_ids)
                if self._init_fn is not None:
                    try:
                        self._init_fn(worker_id)
                    except Exception as exc:
                        exc.add_note(f"(in worker_init_fn({worker_id}) of a ferry thread worker)")
                        raise
            started = time.perf_counter()
            data = self._fetcher.fetch(index)
            return data, time.perf_counter() - started, self._collate_time.s
        finally:
            del self.fetching[task]


class ThreadIter(Resumable, _BaseDataLoaderIter):
    path = "threads"
    # the last batch's fetch + collate time, and each of the two
    last_produce_s: float | None = None
    last_fetch_s: float | None = None
    last_collate_s: float | None = None

    def __init__(self, loader: Any) -> None:
        self._init_resume(loader)
        super().__init__(loader)
        if self._dataset_kind != _DatasetKind.Map:
            raise ValueError(
                "worker_type='thread' needs a map-style dataset; use process workers "
                "for an IterableDataset"
            )
        self._in_order = loader.in_order
        self._depth = max(1, loader.prefetch_factor * self._num_workers)
        self._make = _BatchMaker(self, loader.worker_init_fn)
        self._pool = ThreadPoolExecutor(self._num_workers, thread_name_prefix="ferry-worker")
        self._pending: collections.deque[tuple[Future, Any]] = collections.deque()
        self._task_ids = itertools.count()
        self._sampler_done = False
        # As torch's worker iterator, whose constructor ends with _reset: the sampler is
        # iterated a second time (one that draws when iterated draws twice), and read ahead.
        self._reset(loader, first_iter=True)

    def _refill(self) -> None:
        while not self._sampler_done and len(self._pending) < self._depth:
            try:
                index = self._next_index()
            except StopIteration:
                self._sampler_done = True
                break
            task = next(self._task_ids)
            future = self._pool.submit(self._make, task, index)
            future.task_id = task  # type: ignore[attr-defined]
            self._pending.append((future, index))

    def _timed_out(self, future: Future, index: Any) -> RuntimeError:
        """torch's timeout message, plus which thread holds the batch and its stack."""
        what = f"DataLoader timed out after {self._timeout} seconds"
        thread = self._make.fetching.get(getattr(future, "task_id", -1))
        frame = sys._current_frames().get(thread.ident) if thread is not None else None
        if frame is None:
            return RuntimeError(f"{what}: sample indices {index!r} were not started yet")
        stack = "".join(traceback.format_stack(frame))
        return RuntimeError(
            f"{what}: sample indices {index!r} are with worker thread {thread.name}.\n"
            f"Its Python stack now:\n{stack}"
        )

    def _next_data(self) -> Any:
        self._refill()
        if not self._pending:
            if not self._persistent_workers:
                self._shutdown()
            raise StopIteration
        timeout = self._timeout if self._timeout > 0 else None
        if self._in_order:
            future, index = self._pending.popleft()
        else:
            done, _ = wait([f for f, _ in self._pending], timeout, FIRST_COMPLETED)
            if not done:
                raise self._timed_out(*self._pending[0])
            k = next(k for k, (f, _) in enumerate(self._pending) if f in done)
            future, index = self._pending[k]
            del self._pending[k]
            self._yielded_task = future.task_id  # type: ignore[attr-defined]
        try:
            data, self.last_produce_s, self.last_collate_s = future.result(timeout)
            self.last_fetch_s = self.last_produce_s - self.last_collate_s
        except FutureTimeout:
            raise self._timed_out(future, index) from None
        except Exception as exc:
            exc.add_note(f"(in a ferry thread worker, fetching sample indices {index!r})"
                         f"{which_sample(exc)}")
            self._refill()  # as below, before the error is raised
            raise
        # torch's worker iterator draws the next batch's indices as it takes one in: the
        # sampler stays as far ahead of the consumer
        self._refill()
        if self._pin_memory:
            data = pin_memory(data, self._pin_memory_device)
        return data

    def _reset(self, loader: Any, first_iter: bool = False) -> None:
        super()._reset(loader, first_iter)
        while self._pending:  # the last epoch's batches still in flight
            future, _ = self._pending.popleft()
            if not future.cancel():
                future.exception()
        self._sampler_done = False
        self._task_ids = itertools.count()  # tasks count from 0 in each epoch
        self._refill()

    def _shutdown(self) -> None:
        for future, _ in self._pending:
            future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        # The threads are joined, so that none outlives the epoch or the iterator; one
        # busy in a batch that does not return cannot be stopped and is left after the
        # grace. (The pool's own wait=True would wait for it forever.)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for thread in list(self._pool._threads):
            if thread is not threading.current_thread():  # collected in a pool thread
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __del__(self) -> None:
        if hasattr(self, "_pool"):
            self._shutdown()
        super().__del__()  # Resumable's
