#!/usr/bin/env python3
"""Soak: many epochs of a small dataset through every ferry path, printing how RSS, open
file descriptors, threads, child processes and /dev/shm entries grow. Nothing should.

    PYTHONPATH=python python3 benchmarks/soak.py [--epochs 200] [--json PATH]

Growth is measured from the end of a warm-up (the first tenth of the epochs, at least
2), when allocator caches and imported modules have settled. Both counts are taken right
after an epoch, without waiting: an iterator's epoch end (without persistent workers) and
its deletion join the threads it started. The JSON names the threads and /dev/shm entries
it counted.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import re
import sys
import threading
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

import ferry


class Augment(Dataset):
    """A small Python dataset: crops and flips from a numpy array, dict samples."""

    def __init__(self, n: int = 512) -> None:
        self.x = np.random.default_rng(0).integers(0, 256, (n, 3, 20, 20), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        a, b = np.random.randint(0, 5, 2)
        img = self.x[i, :, a : a + 16, b : b + 16]
        return {"image": torch.from_numpy(img.astype(np.float32)), "label": i % 7, "id": f"{i}"}


def ours(entry: str) -> bool:
    """Whether a /dev/shm entry could come from this process or its workers. Python's
    named semaphores (sem.mp-*) carry no pid and other processes make them too; torch's
    segments (torch_<pid>_...) name their process, and those of other processes on the
    machine (torch creates and unlinks one per shared tensor) are not ours."""
    if entry.startswith("sem.mp-"):
        return False
    m = re.match(r"torch_(\d+)_", entry)
    if m is None:
        return True
    mine = {os.getpid()} | {p.pid for p in multiprocessing.active_children()}
    return int(m.group(1)) in mine


def probe() -> dict[str, float]:
    rss_kib = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    shm = [e for e in os.listdir("/dev/shm") if ours(e)]
    return {
        "rss_mib": rss_kib / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
        "children": len(multiprocessing.active_children()),
        "shm": len(shm),
    }


def named() -> dict[str, list[str]]:
    """What the thread and /dev/shm counts count, so that growth can be told apart:
    Python's threads by name, the others (C++, a library's) by their kernel name."""
    python = {t.native_id for t in threading.enumerate()}
    threads = [t.name for t in threading.enumerate()]
    for tid in os.listdir("/proc/self/task"):
        if int(tid) not in python:
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    threads.append(f"native:{f.read().strip()}")
            except FileNotFoundError:  # it ended meanwhile
                pass
    return {"threads": sorted(threads), "shm": sorted(e for e in os.listdir("/dev/shm") if ours(e))}


def loaders() -> dict[str, ferry.DataLoader]:
    images = torch.randint(0, 256, (2048, 3, 16, 16), dtype=torch.uint8)
    native = TensorDataset(images, torch.arange(2048))
    return {
        "native, 2 threads": ferry.DataLoader(native, batch_size=64, shuffle=True, num_workers=2),
        "workers, 2": ferry.DataLoader(Augment(), batch_size=32, shuffle=True, num_workers=2),
        "workers, 2, persistent": ferry.DataLoader(
            Augment(), batch_size=32, shuffle=True, num_workers=2, persistent_workers=True
        ),
        "threads, 2": ferry.DataLoader(
            Augment(), batch_size=32, shuffle=True, num_workers=2, worker_type="thread"
        ),
    }


def soak(name: str, loader: ferry.DataLoader, epochs: int) -> dict[str, Any]:
    warmup = max(2, epochs // 10)
    start = time.perf_counter()
    base: dict[str, float] = {}
    base_named: dict[str, list[str]] = {}
    batches = 0
    for epoch in range(epochs):
        for _ in loader:
            batches += 1
        if epoch + 1 == warmup:
            gc.collect()
            base, base_named = probe(), named()
    gc.collect()
    end, end_named = probe(), named()
    return {
        "path": name,
        "epochs": epochs,
        "batches": batches,
        "seconds": round(time.perf_counter() - start, 2),
        "after_warmup": base,
        "end": end,
        "growth": {k: round(end[k] - base[k], 2) for k in end},
        "named_after_warmup": base_named,
        "named_end": end_named,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    print(f"ferry soak: {args.epochs} epochs per path; torch {torch.__version__}, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    print(f"{'path':24s} | {'batches':>7s} | {'s':>6s} | growth after warm-up: "
          "RSS MiB, fds, threads, children, /dev/shm")
    results = []
    for name, loader in loaders().items():
        r = soak(name, loader, args.epochs)
        g = r["growth"]
        print(f"{name:24s} | {r['batches']:7d} | {r['seconds']:6.1f} | "
              f"{g['rss_mib']:+.1f}, {g['fds']:+.0f}, {g['threads']:+.0f}, "
              f"{g['children']:+.0f}, {g['shm']:+.0f}")
        results.append(r)
        del loader
        gc.collect()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
