"""worker_type="thread": the same batches as torch for deterministic datasets, errors with
the sample indices, timeout, persistent workers, and clean shutdown."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset

import ferry
import workerdata as wd
from conftest import assert_same_batches


class Deterministic(Dataset):
    """Mixed's leaves without its random draws (threads share the generators)."""

    def __len__(self):
        return 50

    def __getitem__(self, i):
        sample = wd.Mixed()[i]
        del sample["random"]
        return sample


@pytest.mark.parametrize(
    "kw",
    [
        {"batch_size": 8, "shuffle": True},
        {"batch_size": 7, "drop_last": True},
        {"batch_size": None},
        {"batch_size": 5, "collate_fn": wd.collate_to_dict},
    ],
)
@pytest.mark.parametrize("num_workers", [1, 3])
def test_same_batches_as_torch(kw, num_workers):
    g = torch.Generator().manual_seed(2)
    expected = list(TorchDataLoader(Deterministic(), generator=g, **kw))
    it = iter(ferry.DataLoader(Deterministic(), generator=torch.Generator().manual_seed(2),
                               num_workers=num_workers, worker_type="thread", **kw))
    assert it.path == "threads"
    assert_same_batches(expected, list(it))


def test_init_fn_runs_once_per_thread():
    seen = []
    loader = ferry.DataLoader(Deterministic(), batch_size=4, num_workers=3, worker_type="thread",
                              worker_init_fn=seen.append)
    assert len(list(loader)) == 13
    assert sorted(seen) == [0, 1, 2]


def test_error_names_the_sample_indices():
    loader = ferry.DataLoader(wd.Failing("raise"), batch_size=4, num_workers=2,
                              worker_type="thread")
    with pytest.raises(KeyError, match="no sample 13") as info:
        list(loader)
    assert any("[12, 13, 14, 15]" in note for note in info.value.__notes__)


def test_timeout():
    class Slow(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            time.sleep(2)
            return i

    loader = ferry.DataLoader(Slow(), batch_size=2, num_workers=1, worker_type="thread",
                              timeout=0.2)
    with pytest.raises(RuntimeError, match="timed out after 0.2 seconds") as info:
        next(iter(loader))
    text = str(info.value)  # the watchdog: who holds the batch, and where it is stuck
    assert "sample indices [0, 1]" in text and "ferry-worker" in text
    assert "time.sleep(2)" in text


def test_persistent_threads_and_no_leftover_threads():
    before = threading.active_count()
    loader = ferry.DataLoader(Deterministic(), batch_size=4, num_workers=2, worker_type="thread",
                              persistent_workers=True, shuffle=True,
                              generator=torch.Generator().manual_seed(0))
    # A persistent iterator draws the base seed once, as torch's persistent workers do.
    reference = TorchDataLoader(Deterministic(), batch_size=4, shuffle=True, num_workers=2,
                                persistent_workers=True,
                                generator=torch.Generator().manual_seed(0))
    first = iter(loader)  # starts (and abandons) an epoch: the reference does too
    next(iter(reference))
    for _ in range(2):
        it = iter(loader)
        assert it is first
        assert_same_batches(list(reference), list(it))
    del loader, it, first, reference  # torch's persistent workers have threads too
    import gc

    gc.collect()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= before


def test_bad_worker_type():
    with pytest.raises(ValueError, match="worker_type must be"):
        ferry.DataLoader(Deterministic(), worker_type="fiber")


def test_iterable_dataset_is_rejected_clearly():
    with pytest.raises(ValueError, match="map-style"):
        iter(ferry.DataLoader(wd.Shards(10), num_workers=2, worker_type="thread"))


def test_worker_init_fn_runs_after_the_first_draw():
    """A worker_init_fn that reseeds torch's generator (as Lightning's does) must not
    come before the sampler's first draw, which seeds a RandomSampler from it: with
    torch's worker processes it cannot (their generators are their own)."""

    def init(worker_id):
        torch.manual_seed(100 + worker_id)

    def first_batch(cls, **kw):
        torch.manual_seed(0)
        loader = cls(Deterministic(), batch_size=4, shuffle=True, num_workers=2,
                     worker_init_fn=init, **kw)
        return next(iter(loader))["label"].tolist()

    expected = first_batch(TorchDataLoader)
    for _ in range(20):  # the threads' start raced the draw: most runs won it
        assert first_batch(ferry.DataLoader, worker_type="thread") == expected


def test_a_failed_batch_does_not_keep_the_threads_alive():
    """The error raised for a batch must not tie the iterator (and its threads) into a
    reference cycle: `del` stops them without the garbage collector."""
    import gc

    before = set(threading.enumerate())
    gc.disable()
    try:
        it = iter(ferry.DataLoader(wd.Failing("raise"), batch_size=4, num_workers=2,
                                   worker_type="thread"))
        with pytest.raises(KeyError):
            for _ in it:
                pass
        del it
        deadline = time.monotonic() + 5
        while set(threading.enumerate()) - before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not {t.name for t in set(threading.enumerate()) - before}
    finally:
        gc.enable()
