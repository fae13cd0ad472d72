"""The native path: when it is taken, that batches stay intact while held, and that its
threads stop when iteration ends, breaks or the iterator is dropped."""

from __future__ import annotations

import gc
import os
import time

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, Subset, TensorDataset

import ferry
from conftest import assert_same_batches


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def wait_for(cond, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


IMAGES = torch.randint(0, 256, (2000, 3, 8, 8), dtype=torch.uint8)
LABELS = torch.arange(2000)
DS = TensorDataset(IMAGES, LABELS)


class MyTensorDataset(TensorDataset):
    """A subclass that keeps the stock item access: still native."""


class Doubling(TensorDataset):
    def __getitem__(self, index):
        return tuple(2 * t[index] for t in self.tensors)


class Stream(IterableDataset):
    def __iter__(self):
        return iter(range(5))


@pytest.mark.parametrize(
    "make, path",
    [
        (lambda: ferry.DataLoader(DS, batch_size=4), "native"),
        (lambda: ferry.DataLoader(MyTensorDataset(IMAGES, LABELS), batch_size=4), "native"),
        (lambda: ferry.DataLoader(ferry.ArrayDataset(IMAGES.numpy()), batch_size=4), "native"),
        (lambda: ferry.DataLoader(Subset(DS, range(10)), batch_size=None), "native"),
        (lambda: ferry.DataLoader(Doubling(IMAGES, LABELS), batch_size=4), "torch"),
        (lambda: ferry.DataLoader(DS, batch_size=4, collate_fn=lambda b: b), "torch"),
        (lambda: ferry.DataLoader(Stream(), batch_size=2), "torch"),
        (lambda: ferry.DataLoader(TensorDataset(torch.zeros(4, requires_grad=True))), "torch"),
    ],
)
def test_which_path_is_taken(make, path):
    loader = make()
    it = iter(loader)
    assert getattr(it, "path", "torch") == path
    assert_same_batches(list(torch.utils.data.DataLoader(**_torch_args(loader))), list(it))


def _torch_args(loader):
    """torch's DataLoader over the same dataset, sampling and collation."""
    if isinstance(loader.dataset, IterableDataset):
        return {"dataset": loader.dataset, "batch_size": loader.batch_size}
    if loader.batch_size is None:
        return {"dataset": loader.dataset, "sampler": loader.sampler, "batch_size": None,
                "collate_fn": loader.collate_fn}
    return {"dataset": loader.dataset, "batch_sampler": loader.batch_sampler,
            "collate_fn": loader.collate_fn}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_held_batches_are_never_overwritten(num_workers):
    loader = ferry.DataLoader(DS, batch_size=16, shuffle=True, num_workers=num_workers,
                              generator=torch.Generator().manual_seed(0))
    held = []
    for i, (x, y) in enumerate(loader):
        held.append((x, y))
        if i == 99:
            break
    for x, y in held:  # every held batch still matches the rows it was gathered from
        assert torch.equal(x, IMAGES[y])


def test_ring_stays_bounded_while_batches_are_held():
    it = iter(ferry.DataLoader(DS, batch_size=8, num_workers=1, prefetch_factor=2))
    held = list(it)
    assert len(held) == 250
    gather = it._producer.gather
    assert gather.ring_slots <= gather.max_in_flight + 2
    assert gather.ring_untracked_allocations > 0  # beyond the ring: the user's memory
    assert all(torch.equal(x, IMAGES[y]) for x, y in held)


def test_slots_are_reused_when_batches_are_dropped():
    it = iter(ferry.DataLoader(DS, batch_size=8, num_workers=2))
    for _ in it:
        pass
    assert it._producer.gather.ring_untracked_allocations == 0
    assert it._producer.gather.ring_slots <= it._producer.gather.max_in_flight + 2


@pytest.mark.parametrize("touch", ["untyped_storage", "deepcopy", "numpy"])
def test_slots_are_reused_after_python_looked_at_a_batch(touch):
    """Python keeps a storage's refcount raised once it has seen the storage object: the
    ring must not take that for a view that is still alive."""
    import copy

    it = iter(ferry.DataLoader(DS, batch_size=8, num_workers=2))
    for x, y in it:
        if touch == "untyped_storage":
            x.untyped_storage().data_ptr()
        elif touch == "deepcopy":
            copy.deepcopy(y)
        else:
            x.numpy().sum()
    assert it._producer.gather.ring_untracked_allocations == 0


def test_views_keep_their_slot_alive():
    """A tensor derived from a batch (a view, a numpy array) pins the slot too."""
    it = iter(ferry.DataLoader(DS, batch_size=4, num_workers=1, prefetch_factor=1))
    x, _ = next(it)
    kept_numpy = x[1:3].numpy()
    expected = kept_numpy.copy()
    del x
    gc.collect()
    for _ in range(20):
        next(it)
    assert np.array_equal(kept_numpy, expected)


@pytest.mark.parametrize("how", ["exhaust", "break", "del"])
def test_threads_stop(how):
    gc.collect()
    before = thread_count()
    loader = ferry.DataLoader(DS, batch_size=4, num_workers=3)
    it = iter(loader)
    assert thread_count() >= before + 3
    if how == "exhaust":
        for _ in it:
            pass
    else:
        next(it)
        if how == "del":
            del it
        else:
            for i, _ in enumerate(it):
                if i == 2:
                    break
            del it
    gc.collect()
    assert wait_for(lambda: thread_count() <= before), (thread_count(), before)


def test_many_abandoned_iterators_leak_no_threads():
    gc.collect()
    before = thread_count()
    loader = ferry.DataLoader(DS, batch_size=4, num_workers=2, shuffle=True)
    for _ in range(40):
        it = iter(loader)
        next(it)
    del it
    gc.collect()
    assert wait_for(lambda: thread_count() <= before), (thread_count(), before)


def test_persistent_workers_keep_one_pipeline_and_match_torch():
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    ours = ferry.DataLoader(DS, batch_size=64, shuffle=True, num_workers=2,
                            persistent_workers=True, generator=g1)
    theirs = torch.utils.data.DataLoader(DS, batch_size=64, shuffle=True, num_workers=2,
                                         persistent_workers=True, generator=g2)
    first = iter(ours)
    next(first)  # abandon an epoch midway, on both sides: the next one starts clean
    next(iter(theirs))
    for _ in range(3):
        expected = list(theirs)
        it = iter(ours)
        assert it is first
        assert_same_batches(expected, list(it))


class SlowGetitem(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return i


def test_iterator_cannot_be_pickled_like_torch():
    import pickle

    with pytest.raises(NotImplementedError):
        pickle.dumps(iter(ferry.DataLoader(DS)))
