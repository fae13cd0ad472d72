"""loader.stats(): the consumer's wait and compute add up to the wall time, and the
starvation ratio tells a data-bound loop from a compute-bound one."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

import ferry


class SlowDataset(Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        time.sleep(0.005)
        return torch.tensor(i)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_slow_dataset_starves_the_consumer(num_workers):
    loader = ferry.DataLoader(SlowDataset(), batch_size=2, num_workers=num_workers)
    for _ in loader:
        pass
    stats = loader.stats()
    assert stats.batches == 20
    assert stats.starvation > 0.8, stats


def test_slow_consumer_is_not_starved():
    loader = ferry.DataLoader(TensorDataset(torch.arange(400)), batch_size=10, num_workers=2)
    for _ in loader:
        time.sleep(0.01)
    stats = loader.stats()
    assert stats.path == "native"
    assert stats.starvation < 0.2, stats
    assert stats.produce_s is not None and stats.produce_s >= 0


@pytest.mark.parametrize("dataset", [TensorDataset(torch.arange(300)), SlowDataset()])
def test_stage_times_fit_in_the_wall_time(dataset):
    loader = ferry.DataLoader(dataset, batch_size=5, num_workers=2)
    start = time.perf_counter()
    n = 0
    for _ in loader:
        n += 1
    wall = time.perf_counter() - start
    stats = loader.stats()
    assert stats.total_batches == n
    assert (stats.wait_s + stats.compute_s) * stats.batches <= wall
    assert 0.0 <= stats.starvation <= 1.0


def test_stats_before_iterating_and_repr():
    loader = ferry.DataLoader(TensorDataset(torch.arange(10)), batch_size=5)
    assert loader.stats().batches == 0
    list(loader)
    assert "starvation" in repr(loader) and "native path" in repr(loader)


def test_len_matches_torch_for_progress_bars():
    ds = TensorDataset(torch.arange(103))
    for kw in ({"batch_size": 10}, {"batch_size": 10, "drop_last": True}, {"batch_size": None}):
        loader = ferry.DataLoader(ds, **kw)
        assert len(loader) == len(torch.utils.data.DataLoader(ds, **kw))
        assert len(iter(loader)) == len(loader)


def _slow_collate(batch):
    time.sleep(0.01)
    return torch.utils.data.default_collate(batch)


@pytest.mark.parametrize("worker_type", ["process", "thread"])
def test_workers_split_produce_into_fetch_and_collate(worker_type):
    # __getitem__ sleeps 5 ms x 4 samples = 20 ms per batch; collate_fn sleeps 10 ms
    class Slow(Dataset):
        def __len__(self):
            return 24

        def __getitem__(self, i):
            time.sleep(0.005)
            return torch.tensor(i)

    loader = ferry.DataLoader(Slow(), batch_size=4, num_workers=2, worker_type=worker_type,
                              collate_fn=_slow_collate)
    list(loader)
    stats = loader.stats()
    assert stats.fetch_s is not None and stats.fetch_s >= 0.019, stats
    assert stats.collate_s is not None and stats.collate_s >= 0.0095, stats
    assert stats.produce_s == pytest.approx(stats.fetch_s + stats.collate_s)
    assert "fetch" in str(stats)


def test_native_path_has_one_stage():
    loader = ferry.DataLoader(TensorDataset(torch.arange(100)), batch_size=10)
    list(loader)
    stats = loader.stats()
    assert stats.produce_s is not None and stats.fetch_s is None and stats.collate_s is None


def test_no_transfer_stage_without_a_device():
    for num_workers in (0, 2):
        loader = ferry.DataLoader(SlowDataset(), batch_size=10, num_workers=num_workers)
        list(loader)
        stats = loader.stats()
        assert stats.transfer_s is None and "transfer" not in str(stats)


@pytest.mark.needs_cuda
@pytest.mark.parametrize("dataset", [TensorDataset(torch.arange(1000.0)), SlowDataset()])
def test_transfer_stage_with_a_device(dataset):
    loader = ferry.DataLoader(dataset, batch_size=10, num_workers=2, device="cuda")
    start = time.perf_counter()
    list(loader)
    wall = time.perf_counter() - start
    stats = loader.stats()
    assert stats.transfer_s is not None and 0 < stats.transfer_s * stats.batches < wall
    assert "transfer" in str(stats)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_profiler_sees_each_next_as_torch_labels_it(num_workers):
    """ferry skips torch's per-batch profiler label only while no profiler records: under
    torch.profiler each next() is labelled as torch labels its own."""
    ds = TensorDataset(torch.arange(40))

    def labels(loader):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in loader:
                pass
        return [e.name for e in prof.events() if e.name.startswith("enumerate(DataLoader)#")]

    kw = dict(batch_size=8, num_workers=num_workers)
    expected = labels(torch.utils.data.DataLoader(ds, **kw))
    got = labels(ferry.DataLoader(ds, **kw))
    assert len(expected) == 6  # five batches, and the next() that ends the epoch
    assert len(got) == len(expected)
    assert all(name.endswith(".__next__") for name in got)
