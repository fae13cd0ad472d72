"""Where the main thread's time goes, per batch, on the native path (W1's data).

    PYTHONPATH=python python3 benchmarks/hot_loop.py --epochs 5

W1: 100,000 uint8 3x32x32 images + int64 labels in a TensorDataset, batch 256, shuffled,
a full epoch a run, for num_workers 0 and 2. Each step the main thread takes for a batch
is timed by a wrapper around it (perf_counter, ~0.2 us a wrapper): the sampler's draw,
the C++ submit, the C++ next (its wait for the gather threads, then the wrapping of the
slot as tensors), and the rest of next() (ferry's and torch's Python: resume
bookkeeping, order, statistics), each as wall time (which counts the moments the main
thread waits for a core the gather threads hold) and as the main thread's CPU time (the
CPU time of next is its wrapping: waiting takes none). Beside them: the C++ gather time
per batch (on the gather threads) and the copy ceiling (the same bytes with one copy_)
per batch. The figures are the medians over the epochs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Any

import torch
from torch.utils.data import TensorDataset

import ferry


class Timed:
    """`obj`'s methods `names`, each adding its time to `spent[name]`."""

    def __init__(self, obj: Any, names: tuple[str, ...], spent: dict[str, float]) -> None:
        self._obj = obj
        for name in names:
            setattr(self, name, self._wrap(getattr(obj, name), name, spent))

    @staticmethod
    def _wrap(fn: Any, name: str, spent: dict[str, float]) -> Any:
        def timed(*args: Any) -> Any:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args)
            finally:
                spent[name] += time.perf_counter() - started
                spent[name + " cpu"] += time.thread_time() - cpu

        return timed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obj, name)

    def __iter__(self) -> Timed:
        return self

    def __next__(self) -> Any:
        return self.__dict__["__next__"]()


def epoch(loader: ferry.DataLoader) -> dict[str, float]:
    steps = ("__next__", "submit", "next")
    spent = dict.fromkeys(steps + tuple(f"{s} cpu" for s in steps), 0.0)
    it = iter(loader)
    producer = it._producer
    producer.gather = Timed(producer.gather, ("submit", "next"), spent)
    draws = Timed(it._sampler_iter, ("__next__",), spent)
    it._sampler_iter = draws  # (drawn through the sampler's own __next__, timed)
    if it._epoch is not None:
        it._epoch.sampler_iter = draws
    batches, cpu, started = 0, time.thread_time(), time.perf_counter()
    for _ in it:
        batches += 1
    wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
    rest = wall - sum(spent[s] for s in steps)
    rest_cpu = cpu - sum(spent[f"{s} cpu"] for s in steps)
    return {
        "batches": batches,
        "next(), whole": (wall / batches, cpu / batches),
        "sampler draw": (spent["__next__"] / batches, spent["__next__ cpu"] / batches),
        "C++ submit": (spent["submit"] / batches, spent["submit cpu"] / batches),
        "C++ next (wait + wrap)": (spent["next"] / batches, spent["next cpu"] / batches),
        "Python (ferry + torch)": (rest / batches, rest_cpu / batches),
        "C++ gather (threads)": (loader.stats().produce_s or 0.0, float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--tiny", action="store_true",
                        help="rows of one byte instead of 3x32x32: the main thread's share alone")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    shape = (1,) if args.tiny else (3, 32, 32)
    images = torch.randint(0, 256, (args.samples, *shape), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (args.samples,), dtype=torch.int64, generator=g)
    ds = TensorDataset(images, labels)
    copies = []
    dst = (torch.empty_like(images), torch.empty_like(labels))
    for _ in range(args.epochs + 1):  # the first touches the destination's pages
        started = time.perf_counter()
        dst[0].copy_(images)
        dst[1].copy_(labels)
        copies.append(time.perf_counter() - started)
    batches = -(-args.samples // args.batch_size)
    ceiling = min(copies[1:]) / batches
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), ferry {ferry.__version__}, "
          f"{ferry.backend_info()['native_threads_default']} gather threads without workers")
    what = " (rows of one byte)" if args.tiny else ""
    print(f"W1{what}: {args.samples:,} samples, batch {args.batch_size}, {batches} batches "
          f"an epoch, median of {args.epochs} epochs; us per batch")
    print(f"copy ceiling (one copy_ of the same bytes, {torch.get_num_threads()} threads, "
          f"fastest of {args.epochs}): {ceiling * 1e6:.1f} us per batch")
    rows: dict[int, dict[str, float]] = {}
    for nw in (0, 2):
        runs = []
        for _ in range(args.epochs):
            loader = ferry.DataLoader(ds, batch_size=args.batch_size, shuffle=True,
                                      num_workers=nw, generator=torch.Generator().manual_seed(0))
            runs.append(epoch(loader))
        rows[nw] = {k: tuple(statistics.median(r[k][i] for r in runs) for i in (0, 1))
                    for k in runs[0] if k != "batches"}
    print(f"{'step':<28}" + "".join(f"{'nw=' + str(nw) + ' wall':>12}{'CPU':>8}" for nw in rows))
    for key in rows[0]:
        cells = (f"{rows[nw][key][0] * 1e6:>12.1f}{rows[nw][key][1] * 1e6:>8.1f}" for nw in rows)
        print(f"{key:<28}" + "".join(cells))
    for nw, row in rows.items():
        if args.tiny:
            break
        print(f"nw={nw}: {100 * ceiling / row['next(), whole'][0]:.0f}% of the copy ceiling "
              f"(with the timing wrappers)")


if __name__ == "__main__":
    main()
