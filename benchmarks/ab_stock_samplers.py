"""A/B of the native path's stock samplers drawn as tensors (ferry._sampling) against the
same samplers iterated by torch as lists of Python ints, in one process, alternating.

    PYTHONPATH=python python3 benchmarks/ab_stock_samplers.py --rounds 5

W1's data (uint8 3x32x32 images + int64 labels, batch 256), a full epoch each run; the
median samples/s of each arm. "lists" turns the tensor path off (stock_batches -> None).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch.utils.data import DistributedSampler, TensorDataset

import ferry
import ferry._native as native


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=100_000)
    args = parser.parse_args()
    n = args.samples
    print(f"machine : {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"Python {platform.python_version()}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    ds = TensorDataset(torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8),
                       torch.randint(0, 10, (n,)))
    tensors = native.stock_batches
    arms = {"lists": lambda sampler: None, "tensors": tensors}
    cases = {
        "shuffle=True, nw=0": lambda r: {"shuffle": True, "num_workers": 0},
        "shuffle=True, nw=2": lambda r: {"shuffle": True, "num_workers": 2},
        "DistributedSampler(2 ranks), nw=2": lambda r: {
            "sampler": DistributedSampler(ds, num_replicas=2, rank=0, seed=r), "num_workers": 2},
    }
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        for r in range(args.rounds):
            for case, kw in cases.items():
                for arm, fn in arms.items():
                    native.stock_batches = fn
                    g = torch.Generator().manual_seed(r)
                    loader = ferry.DataLoader(ds, batch_size=256, generator=g, **kw(r))
                    started = time.perf_counter()
                    samples = sum(len(labels) for _, labels in loader)
                    rates.setdefault((case, arm), []).append(
                        samples / (time.perf_counter() - started))
    finally:
        native.stock_batches = tensors
    for case in cases:
        lists = statistics.median(rates[(case, "lists")])
        fast = statistics.median(rates[(case, "tensors")])
        print(f"{case:36s} lists {lists / 1e6:5.2f} M/s  tensors {fast / 1e6:5.2f} M/s  "
              f"ratio {fast / lists:.2f}x  (median of {args.rounds})")


if __name__ == "__main__":
    main()
