"""Loader statistics, always on: what the consumer waits for, what it does between
batches, and what producing a batch costs, over the last `window` batches."""

from __future__ import annotations

import collections
from dataclasses import dataclass

DEFAULT_WINDOW = 100


@dataclass(frozen=True)
class LoaderStats:
    """A snapshot of a loader's recent behaviour (the last `batches` batches).

    Times are means per batch, in seconds:

    * ``wait_s``: the consumer blocked in ``next()`` waiting for the batch;
    * ``compute_s``: the consumer's own time between two batches (the training step);
    * ``produce_s``: the producer's time to make one batch (gathering rows on the native
      path; fetching plus collating in a worker), when the path reports it, else None.
      Producers run in parallel, so this can exceed ``wait_s + compute_s``;
    * ``fetch_s`` and ``collate_s``: its two stages in a worker (process or thread):
      the dataset's ``__getitem__``/``__getitems__`` calls, and the ``collate_fn`` with
      the batch's placement in shared memory. None on the native path, where C++ threads
      gather rows straight into the batch (one stage);
    * ``transfer_s``: with ``device=``, the host's share of moving a batch to the device:
      making the page-locked staging copy (where the batch was not gathered into one)
      and enqueuing the copy on ferry's copy stream. The copy itself runs asynchronously
      and the consumer's stream waits for it on the device, so its duration is not in
      here. None without a device.

    ``starvation`` is ``wait_s / (wait_s + compute_s)``: the share of the consumer's time
    spent waiting for data. Near 0 the loader keeps up; near 1 the training loop is
    data-bound.
    """

    path: str
    batches: int
    total_batches: int
    batches_per_s: float
    wait_s: float
    compute_s: float
    produce_s: float | None
    starvation: float
    fetch_s: float | None = None
    collate_s: float | None = None
    transfer_s: float | None = None

    def __str__(self) -> str:
        produce = "n/a" if self.produce_s is None else f"{self.produce_s * 1e3:.2f} ms"
        if self.fetch_s is not None and self.collate_s is not None:
            produce += (f" (fetch {self.fetch_s * 1e3:.2f} ms, "
                        f"collate {self.collate_s * 1e3:.2f} ms)")
        if self.transfer_s is not None:
            produce += f", transfer {self.transfer_s * 1e3:.2f} ms"
        return (
            f"{self.path} path, last {self.batches} of {self.total_batches} batches: "
            f"{self.batches_per_s:.1f} batches/s, wait {self.wait_s * 1e3:.2f} ms, "
            f"compute {self.compute_s * 1e3:.2f} ms, produce {produce}, "
            f"starvation {self.starvation:.1%}"
        )


class StatsRecorder:
    def __init__(self, path: str, window: int = DEFAULT_WINDOW) -> None:
        self.path = path
        self.total = 0
        self._wait: collections.deque[float] = collections.deque(maxlen=window)
        self._compute: collections.deque[float] = collections.deque(maxlen=window)
        self._produce: collections.deque[float] = collections.deque(maxlen=window)
        self._fetch: collections.deque[float] = collections.deque(maxlen=window)
        self._collate: collections.deque[float] = collections.deque(maxlen=window)
        self._transfer: collections.deque[float] = collections.deque(maxlen=window)
        self._last_return: float | None = None

    def record(self, started: float, returned: float, produce_s: float | None,
               fetch_s: float | None = None, collate_s: float | None = None,
               transfer_s: float | None = None) -> None:
        self.total += 1
        self._wait.append(returned - started)
        # The consumer's time between two batches; nothing before the first batch.
        self._compute.append(started - self._last_return if self._last_return else 0.0)
        self._last_return = returned
        if produce_s is not None:
            self._produce.append(produce_s)
        if fetch_s is not None and collate_s is not None:
            self._fetch.append(fetch_s)
            self._collate.append(collate_s)
        if transfer_s is not None:
            self._transfer.append(transfer_s)

    def epoch_ended(self) -> None:
        self._last_return = None  # the pause between epochs is not a training step

    def snapshot(self) -> LoaderStats:
        n = len(self._wait)
        wait = sum(self._wait) / n if n else 0.0
        compute = sum(self._compute) / n if n else 0.0
        produce = _mean(self._produce)
        per_batch = wait + compute
        return LoaderStats(
            path=self.path,
            batches=n,
            total_batches=self.total,
            batches_per_s=1.0 / per_batch if per_batch > 0 else 0.0,
            wait_s=wait,
            compute_s=compute,
            produce_s=produce,
            starvation=wait / per_batch if per_batch > 0 else 0.0,
            fetch_s=_mean(self._fetch),
            collate_s=_mean(self._collate),
            transfer_s=_mean(self._transfer),
        )


def _mean(values: collections.deque[float]) -> float | None:
    return sum(values) / len(values) if values else None
