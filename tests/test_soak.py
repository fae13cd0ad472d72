"""A short soak (benchmarks/soak.py with fewer epochs): over many epochs of every path,
RSS, file descriptors, threads, child processes and /dev/shm entries stay flat; and the
threads an iterator starts are gone when its epoch ends or it is deleted, not later."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import torch
from torch.utils.data import Dataset

import ferry

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_soak_is_flat(tmp_path):
    out = tmp_path / "soak.json"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "soak.py"), "--epochs", "30",
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert len(results) == 4
    for r in results:
        g = r["growth"]
        assert g["fds"] <= 0 and g["threads"] <= 0 and g["children"] <= 0, r
        assert g["shm"] <= 0, r
        assert g["rss_mib"] < 32, r  # allocator noise is a few MiB; a leak grows per epoch


class Floats(Dataset):
    """A Python dataset, so that the workers (not ferry's native path) make the batches."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.tensor(float(i))


@pytest.mark.parametrize("worker_type", ["process", "thread"])
def test_no_thread_outlives_its_epoch_or_iterator(worker_type):
    # Measured at once, with no waiting: threads still ending after the iterator is done
    # (index-queue feeders, pool threads) are what made the soak flaky on a busy machine.
    before = set(threading.enumerate())
    loader = ferry.DataLoader(Floats(), batch_size=4, num_workers=2, worker_type=worker_type)
    for _ in range(5):
        for _ in loader:
            pass
        assert set(threading.enumerate()) - before == set()
    it = iter(loader)
    next(it)
    del it  # mid-epoch
    assert set(threading.enumerate()) - before == set()
