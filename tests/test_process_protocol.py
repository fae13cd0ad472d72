"""The process path's main-process protocol against torch's _MultiProcessingDataLoaderIter:
for Python datasets with num_workers >= 1, ferry asks the workers for batches as torch
does, so every test compares ferry with torch run in the same test (same arguments, an
equal generator): the same batches in the same order (in_order=False: the same
multiset), the same errors and the same warnings. The datasets are defined here, at
module level, so that spawned workers can import them."""

from __future__ import annotations

import collections
import random
import re
import time
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from torch.utils.data.datapipes.iter import IterableWrapper

import ferry
from conftest import assert_same_batches

# Per-worker lengths of an uneven IterableDataset: a worker with none, one with far more.
UNEVEN = {1: [7], 2: [0, 11], 3: [2, 0, 13]}


# --- datasets ---------------------------------------------------------------------------
class Uneven(IterableDataset):
    """Worker w yields lengths[w] samples, each naming its worker and position; `noisy`:
    each also carries draws from the worker's three generators."""

    def __init__(self, lengths: list[int], noisy: bool = False, slow: int | None = None,
                 late_end: int | None = None) -> None:
        self.lengths, self.noisy, self.slow, self.late_end = lengths, noisy, slow, late_end

    def __iter__(self):
        info = get_worker_info()
        for w in range(len(self.lengths)) if info is None else [info.id]:
            for j in range(self.lengths[w]):
                if j == self.slow:
                    time.sleep(0.3)
                sample = {"x": torch.tensor([w, j]), "w": w, "j": j}
                if self.noisy:
                    sample["r"] = (torch.rand(2), np.random.rand(), random.random())
                yield sample
            if w == self.late_end:  # its end reaches the main process after others' batches
                time.sleep(0.3)


class Numbered(Dataset):
    """Sample i names itself; `noisy`: draws from the worker's three generators; `slow`:
    that sample takes a while; `fail`: that sample raises."""

    def __init__(self, n: int, noisy: bool = False, slow: int | None = None,
                 fail: int | None = None, error: type = ValueError) -> None:
        self.n, self.noisy, self.slow, self.fail, self.error = n, noisy, slow, fail, error

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i == self.fail:
            raise self.error(f"sample {i} is broken")
        if i == self.slow:
            time.sleep(0.3)
        if self.noisy:
            return i, torch.rand(2), np.random.randint(1 << 30), random.random()
        return i, torch.full((2,), float(i))


class TwoArgError(Exception):
    """An error torch cannot rebuild from a message (it raises a RuntimeError instead)."""

    def __init__(self, what, why=None) -> None:
        if why is None:
            raise TypeError("two arguments")
        super().__init__(what, why)


def two_arg_error(message: str) -> TwoArgError:
    return TwoArgError(message, "because")


class Epochal(IterableDataset):
    """A persistent worker's dataset copy lives on: each epoch (counted in the copy)
    yields a different number of samples per worker."""

    def __init__(self) -> None:
        self.epoch = 0

    def __iter__(self):
        self.epoch += 1
        info = get_worker_info()
        wid = 0 if info is None else info.id
        for j in range((wid + 1) * self.epoch % 5):
            yield torch.tensor([self.epoch, wid, j])


class Span(IterableDataset):
    """torch's documented pattern: worker_init_fn narrows each worker's copy."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def __iter__(self):
        return iter(range(self.start, self.end))


def split_span(worker_id: int) -> None:
    """Worker 0 gets nothing, the last far more than the others."""
    info = get_worker_info()
    ds = info.dataset
    cuts = [ds.start, *[min(ds.end, ds.start + 2 * k) for k in range(info.num_workers - 1)], ds.end]
    ds.start, ds.end = cuts[worker_id], cuts[worker_id + 1]


def as_list(batch):
    """A collate_fn that keeps the samples as they are."""
    return list(batch)


class WithEmptyBatch:
    """A batch sampler that yields an empty batch among others."""

    def __len__(self) -> int:
        return 4

    def __iter__(self):
        return iter([[0, 1], [], [2, 3, 4], [5]])


class FailsMidStream(IterableDataset):
    """Each worker yields its share of range(n); the item `fail` raises. `resumable`: an
    iterator object that goes on after raising (a generator would end)."""

    def __init__(self, n: int, fail: int, resumable: bool) -> None:
        self.n, self.fail, self.resumable = n, fail, resumable

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        items = iter(range(wid, self.n, nw))
        if self.resumable:
            return _Raising(items, self.fail)
        return (self._check(i) for i in items)

    def _check(self, i: int) -> int:
        if i == self.fail:
            raise ValueError(f"item {i} is broken")
        return i


class _Raising:
    def __init__(self, items, fail: int) -> None:
        self.items, self.fail = items, fail

    def __iter__(self):
        return self

    def __next__(self) -> int:
        i = next(self.items)
        if i == self.fail:
            raise ValueError(f"item {i} is broken")
        return i


class Understated(IterableDataset):
    """Yields `n` items in all (shared out among the workers), but says it has fewer."""

    def __init__(self, n: int, claimed: int) -> None:
        self.n, self.claimed = n, claimed

    def __len__(self) -> int:
        return self.claimed

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(wid, self.n, nw))


class EagerSampler:
    """A sampler that draws its permutation as soon as it is iterated (torch iterates the
    sampler twice as its worker iterator starts), in batches of varying size."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return 4

    def __iter__(self):
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        cuts = [0, 1, 4, 9, self.n]
        return iter([perm[a:b] for a, b in zip(cuts, cuts[1:], strict=False)])


def failing_collate(batch):
    if any(b[0] == 9 for b in batch):
        raise ValueError("cannot collate sample 9")
    return torch.utils.data.default_collate(batch)


def failing_init(worker_id: int) -> None:
    if worker_id == 1:
        raise ValueError("worker 1 cannot start")


def seed_everything(worker_id: int) -> None:
    """A worker_init_fn as users write them: numpy and random seeded from torch's seed."""
    seed = get_worker_info().seed
    np.random.seed((seed + 17 * worker_id) % 2**32)
    random.seed(seed // 3)


# --- helpers ----------------------------------------------------------------------------
def pair(dataset, seed: int = 0, **kw):
    """torch's loader and ferry's, with the same arguments and equal generators."""
    return (TorchDataLoader(dataset, generator=torch.Generator().manual_seed(seed), **kw),
            ferry.DataLoader(dataset, generator=torch.Generator().manual_seed(seed), **kw))


def on_workers(it):
    assert it.path == "workers"  # the process path this file is about
    return it


def freeze(x):
    """A batch as a hashable value (for multisets)."""
    if isinstance(x, torch.Tensor):
        return (str(x.dtype), tuple(x.shape), tuple(x.flatten().tolist()))
    if isinstance(x, dict):
        return tuple((k, freeze(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return tuple(freeze(v) for v in x)
    return x


def run(it, stop_after: int | None = None, limit: int = 500):
    """What next() gives until StopIteration (or `stop_after` batches): each batch, or the
    type of the error it raised and the worker torch's message names."""
    out = []
    while len(out) < (limit if stop_after is None else stop_after):
        try:
            out.append(("batch", freeze(next(it))))
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001
            worker = re.search(r"in DataLoader worker process (\d+)", str(e))
            out.append(("error", type(e).__name__, worker and worker.group(1)))
            # (the traceback holds the iterator in a cycle: torch's, collected by the
            # cyclic collector after its queues, would wait 5 s for each worker)
            e.__traceback__ = None
    return out


# --- 1. an IterableDataset sharded unevenly ---------------------------------------------
@pytest.mark.parametrize("prefetch_factor", [1, 2, 4])
@pytest.mark.parametrize("batch_size, drop_last",
                         [(1, False), (3, False), (3, True), (None, False)])
@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_uneven_iterable_shards_in_torchs_order(num_workers, batch_size, drop_last,
                                                prefetch_factor):
    theirs, ours = pair(Uneven(UNEVEN[num_workers]), num_workers=num_workers,
                        batch_size=batch_size, drop_last=drop_last,
                        prefetch_factor=prefetch_factor)
    expected = list(theirs)
    assert_same_batches(expected, list(on_workers(iter(ours))))
    assert torch.equal(ours.generator.get_state(), theirs.generator.get_state())


@pytest.mark.parametrize("batch_size", [1, 4, None])
@pytest.mark.parametrize("num_workers", [2, 3])
def test_shards_set_by_worker_init_fn(num_workers, batch_size):
    theirs, ours = pair(Span(0, 20), num_workers=num_workers, batch_size=batch_size,
                        worker_init_fn=split_span)
    assert_same_batches(list(theirs), list(on_workers(iter(ours))))


@pytest.mark.parametrize("prefetch_factor", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("lengths", [[0, 6], [5, 0, 9], [4, 4, 4]])
def test_a_worker_whose_end_comes_late(lengths, batch_size, prefetch_factor):
    """Tasks sent to a worker whose data ran out before the main process learns of it
    are never answered, in torch as here: the other workers' batches follow in turn."""
    nw = len(lengths)
    theirs, ours = pair(Uneven(lengths, late_end=1), num_workers=nw, batch_size=batch_size,
                        prefetch_factor=prefetch_factor)
    expected = list(theirs)
    assert_same_batches(expected, list(on_workers(iter(ours))))


@pytest.mark.parametrize("num_workers, prefetch_factor", [(3, 2), (2, 4)])
def test_fewer_batches_than_the_prefetch_depth(num_workers, prefetch_factor):
    theirs, ours = pair(Numbered(5, noisy=True), num_workers=num_workers, batch_size=2,
                        prefetch_factor=prefetch_factor, shuffle=True)
    assert_same_batches(list(theirs), list(on_workers(iter(ours))))


# --- 2. persistent workers, epochs abandoned part way -----------------------------------
# batches taken in each epoch (None: to its end)
PATTERNS = [(None, 1, None), (2, None, 2), (1, 2, None), (0, None, 0)]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("num_workers, batch_size, prefetch_factor",
                         [(2, 1, 2), (3, 3, 1), (3, 1, 4)])
def test_persistent_iterable_epochs_abandoned_or_not(num_workers, batch_size, prefetch_factor,
                                                     pattern):
    theirs, ours = pair(Uneven(UNEVEN[num_workers]), num_workers=num_workers,
                        batch_size=batch_size, prefetch_factor=prefetch_factor,
                        persistent_workers=True)
    for epoch, take in enumerate(pattern):
        expected = run(iter(theirs), take)
        assert run(on_workers(iter(ours)), take) == expected, f"epoch {epoch}"


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("num_workers", [2, 3])
def test_persistent_map_style_epochs_abandoned_or_not(num_workers, pattern):
    """Shuffled, with random draws in the samples: the sampler's generator draws and each
    worker's generators (which a persistent worker carries over an abandoned epoch's
    prefetched batches) must match torch's."""
    theirs, ours = pair(Numbered(30, noisy=True), seed=5, num_workers=num_workers,
                        batch_size=4, shuffle=True, persistent_workers=True)
    for epoch, take in enumerate(pattern):
        expected = run(iter(theirs), take)
        assert run(on_workers(iter(ours)), take) == expected, f"epoch {epoch}"
        assert torch.equal(ours.generator.get_state(), theirs.generator.get_state())


@pytest.mark.parametrize("num_workers, batch_size", [(2, 1), (3, 3)])
def test_persistent_epoch_left_after_its_last_batch(num_workers, batch_size):
    """Every batch taken but not the StopIteration: the workers' ends are still on their
    way when the next epoch begins."""
    kw = {"num_workers": num_workers, "batch_size": batch_size}
    total = len(list(TorchDataLoader(Uneven(UNEVEN[num_workers]), **kw)))
    theirs, ours = pair(Uneven(UNEVEN[num_workers]), persistent_workers=True, **kw)
    for epoch, take in enumerate([total, None, total, None]):
        expected = run(iter(theirs), take)
        assert run(on_workers(iter(ours)), take) == expected, f"epoch {epoch}"


@pytest.mark.parametrize("num_workers, batch_size", [(2, 2), (3, 1)])
def test_persistent_workers_keep_their_dataset_copy(num_workers, batch_size):
    theirs, ours = pair(Epochal(), num_workers=num_workers, batch_size=batch_size,
                        persistent_workers=True)
    for epoch, take in enumerate([None, 1, None, None]):
        expected = run(iter(theirs), take)
        assert run(on_workers(iter(ours)), take) == expected, f"epoch {epoch}"


@pytest.mark.parametrize("persistent", [False, True])
def test_a_sampler_that_draws_when_iterated(persistent):
    """torch's worker iterator iterates the sampler twice as it starts: a sampler that
    draws at once draws twice; the generator ends where torch's does."""
    gens = [torch.Generator().manual_seed(8) for _ in range(2)]
    kw = {"num_workers": 2, "persistent_workers": persistent}
    theirs, ours = (cls(Numbered(20, noisy=True), batch_sampler=EagerSampler(20, g), **kw)
                    for cls, g in [(TorchDataLoader, gens[0]), (ferry.DataLoader, gens[1])])
    torch.manual_seed(1)
    expected = [list(theirs) for _ in range(2)]
    after = torch.get_rng_state()
    torch.manual_seed(1)
    for epoch in range(2):
        assert_same_batches(expected[epoch], list(on_workers(iter(ours))))
    assert torch.equal(gens[1].get_state(), gens[0].get_state())
    assert torch.equal(torch.get_rng_state(), after)


# --- 3. in_order=False --------------------------------------------------------------------
@pytest.mark.parametrize("num_workers, batch_size, prefetch_factor",
                         [(2, 1, 1), (2, 4, 2), (3, 3, 1)])
def test_out_of_order_map_style_same_multiset(num_workers, batch_size, prefetch_factor):
    theirs, ours = pair(Numbered(40, slow=2), num_workers=num_workers, batch_size=batch_size,
                        prefetch_factor=prefetch_factor, in_order=False)
    expected = collections.Counter(freeze(b) for b in theirs)
    got = [freeze(b) for b in on_workers(iter(ours))]
    assert collections.Counter(got) == expected
    assert len(got) == sum(expected.values())


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("num_workers, batch_size, prefetch_factor",
                         [(2, 1, 1), (3, 3, 2), (3, None, 1), (3, 1, 4)])
def test_out_of_order_iterable_same_multiset(num_workers, batch_size, prefetch_factor,
                                             persistent):
    theirs, ours = pair(Uneven(UNEVEN[num_workers], slow=1), num_workers=num_workers,
                        batch_size=batch_size, prefetch_factor=prefetch_factor,
                        in_order=False, persistent_workers=persistent)
    for epoch in range(2 if persistent else 1):
        expected = collections.Counter(freeze(b) for b in theirs)
        got = collections.Counter(freeze(b) for b in on_workers(iter(ours)))
        assert got == expected, f"epoch {epoch}"
    if persistent:  # an epoch left after one batch, then a whole one
        assert len(run(iter(theirs), 1)) == len(run(iter(ours), 1)) == 1
        expected = collections.Counter(freeze(b) for b in theirs)
        assert collections.Counter(freeze(b) for b in ours) == expected


@pytest.mark.parametrize("num_workers, batch_size", [(2, 1), (3, 4)])
def test_out_of_order_with_an_error(num_workers, batch_size):
    theirs, ours = pair(Numbered(30, slow=0, fail=13), num_workers=num_workers,
                        batch_size=batch_size, in_order=False)
    expected = collections.Counter(run(iter(theirs)))
    assert expected[("error", "ValueError", str(13 // batch_size % num_workers))] == 1
    assert collections.Counter(run(on_workers(iter(ours)))) == expected


# --- 4. a sample that raises ------------------------------------------------------------
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("num_workers, batch_size", [(1, 4), (2, 1), (2, 4), (3, 3)])
def test_error_then_the_remaining_batches(num_workers, batch_size, persistent):
    theirs, ours = pair(Numbered(20, fail=9), num_workers=num_workers, batch_size=batch_size,
                        persistent_workers=persistent)
    for epoch in range(2 if persistent else 1):
        expected = run(iter(theirs))
        assert [e for e in expected if e[0] == "error"] == [
            ("error", "ValueError", str(9 // batch_size % num_workers))]
        assert run(on_workers(iter(ours))) == expected, f"epoch {epoch}"


@pytest.mark.parametrize("error", [KeyError, two_arg_error, StopIteration, IndexError])
@pytest.mark.parametrize("num_workers, batch_size", [(2, 1), (2, 4)])
def test_errors_torch_rebuilds_its_own_way(num_workers, batch_size, error):
    """KeyError (its message kept as is), an error torch cannot rebuild from a message
    (a RuntimeError), StopIteration (it ends torch's for loop, and next() goes on)."""
    theirs, ours = pair(Numbered(20, fail=9, error=error), num_workers=num_workers,
                        batch_size=batch_size)
    it_theirs, it_ours = iter(theirs), on_workers(iter(ours))
    for part in range(2):  # until the first StopIteration, then what next() gives after it
        expected = run(it_theirs)
        assert run(it_ours) == expected, f"part {part}"


def test_an_error_that_arrives_before_its_turn():
    """The failing batch is done while an earlier one is slow: kept, and raised in turn."""
    theirs, ours = pair(Numbered(20, slow=0, fail=3), num_workers=2, batch_size=1)
    expected = run(iter(theirs))
    assert expected[3][0] == "error"
    assert run(on_workers(iter(ours))) == expected


def test_a_timeout_then_the_rest():
    theirs, ours = pair(Numbered(12, slow=2), num_workers=2, batch_size=1, timeout=0.1)
    expected, got = run(iter(theirs)), run(on_workers(iter(ours)))
    assert ("error", "RuntimeError", None) in expected
    assert ("error", "RuntimeError", None) in got
    assert [e for e in got if e[0] == "batch"] == [e for e in expected if e[0] == "batch"]


def test_empty_batch_and_a_collate_fn_that_keeps_samples():
    kw = {"num_workers": 2, "batch_sampler": WithEmptyBatch()}
    theirs, ours = pair(Numbered(6), **kw)
    expected = run(iter(theirs))
    assert expected[1] == ("error", "IndexError", "1")
    assert run(on_workers(iter(ours))) == expected
    theirs, ours = pair(Numbered(6), collate_fn=as_list, **kw)
    expected = run(iter(theirs))
    assert run(on_workers(iter(ours))) == expected


@pytest.mark.parametrize("num_workers, batch_size", [(2, 4), (3, 1)])
def test_collate_error_then_the_remaining_batches(num_workers, batch_size):
    theirs, ours = pair(Numbered(20), num_workers=num_workers, batch_size=batch_size,
                        collate_fn=failing_collate)
    expected = run(iter(theirs))
    assert sum(e[0] == "error" for e in expected) == 1
    assert run(on_workers(iter(ours))) == expected


@pytest.mark.parametrize("dataset", ["map", "iterable"])
def test_worker_init_fn_that_raises(dataset):
    """torch sends the error of a worker's init as its first batch, then one error per
    batch asked of that worker (it has no fetcher); the other worker goes on."""
    ds = Numbered(20) if dataset == "map" else Uneven([5, 5])
    theirs, ours = pair(ds, num_workers=2, batch_size=2, worker_init_fn=failing_init)
    expected = run(iter(theirs))
    assert ("error", "ValueError", "1") in expected
    assert run(on_workers(iter(ours))) == expected


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("resumable", [False, True])
@pytest.mark.parametrize("num_workers, batch_size", [(1, 2), (2, 1), (3, 2)])
def test_iterable_error_mid_stream_then_the_rest(num_workers, batch_size, resumable,
                                                 persistent):
    theirs, ours = pair(FailsMidStream(25, fail=7, resumable=resumable),
                        num_workers=num_workers, batch_size=batch_size,
                        persistent_workers=persistent)
    for epoch in range(2 if persistent else 1):
        expected = run(iter(theirs))
        assert any(e[0] == "error" for e in expected)
        assert run(on_workers(iter(ours))) == expected, f"epoch {epoch}"


# --- 5. DataPipes -------------------------------------------------------------------------
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("num_workers, batch_size", [(2, 4), (3, None)])
def test_datapipe_shuffled_and_sharded_over_epochs(num_workers, batch_size, persistent):
    def loaders():
        return pair(IterableWrapper(range(50)).shuffle().sharding_filter(), seed=11,
                    num_workers=num_workers, batch_size=batch_size,
                    persistent_workers=persistent)

    theirs, ours = loaders()
    expected = [list(theirs) for _ in range(2)]
    assert freeze(expected[0]) != freeze(expected[1])  # (the shuffle does shuffle)
    for epoch in range(2):
        assert_same_batches(expected[epoch], list(on_workers(iter(ours))))


@pytest.mark.parametrize("persistent", [False, True])
def test_datapipe_and_shuffle_seeded_globally(persistent):
    """No generator: the seeds come from torch's global generator, which each loader
    must leave where torch's leaves it."""
    def epochs(cls):
        torch.manual_seed(21)
        loader = cls(IterableWrapper(range(30)).shuffle().sharding_filter(), num_workers=2,
                     batch_size=4, persistent_workers=persistent)
        out = [list(loader) for _ in range(2)]
        return out, torch.get_rng_state()

    expected, expected_state = epochs(TorchDataLoader)
    got, state = epochs(ferry.DataLoader)
    for e, g in zip(expected, got, strict=True):
        assert_same_batches(e, g)
    assert torch.equal(state, expected_state)


# --- 6. spawn and forkserver --------------------------------------------------------------
@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_start_methods(context):
    theirs, ours = pair(Numbered(12, noisy=True), seed=3, num_workers=2, batch_size=3,
                        shuffle=True, multiprocessing_context=context)
    assert_same_batches(list(theirs), list(on_workers(iter(ours))))


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_start_methods_persistent_iterable(context):
    theirs, ours = pair(Uneven([3, 0, 8]), num_workers=3, batch_size=2,
                        persistent_workers=True, multiprocessing_context=context)
    for epoch, take in enumerate([1, None]):
        expected = run(iter(theirs), take)
        assert run(on_workers(iter(ours)), take) == expected, f"epoch {epoch}"


# --- 7. worker_init_fn seeding numpy and random -------------------------------------------
@pytest.mark.parametrize("seed", [0, 12345])
@pytest.mark.parametrize("dataset", ["map", "iterable"])
@pytest.mark.parametrize("num_workers", [2, 3])
def test_worker_init_fn_seeds(num_workers, dataset, seed):
    if dataset == "map":
        ds, kw = Numbered(24, noisy=True), {"batch_size": 3, "shuffle": True}
    else:
        ds, kw = Uneven(UNEVEN[num_workers], noisy=True), {"batch_size": 2}
    theirs, ours = pair(ds, seed=seed, num_workers=num_workers,
                        worker_init_fn=seed_everything, **kw)
    expected = list(theirs)
    assert_same_batches(expected, list(on_workers(iter(ours))))


# --- 8. an IterableDataset's len() understated --------------------------------------------
def warned(loader, epochs: int):
    """len(loader), then every warning over `epochs` epochs: (category, text, file)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        length = len(loader)
        for _ in range(epochs):
            for _ in loader:
                pass
    return length, [(w.category, str(w.message), w.filename) for w in caught]


@pytest.mark.parametrize("pin_memory", [False, True])
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("num_workers, batch_size", [(2, 2), (3, None)])
def test_understated_len_warns_as_torch(num_workers, batch_size, persistent, pin_memory):
    """Every warning, in order: the understated length's, and torch's others (too many
    workers for the machine, pin_memory without an accelerator)."""
    theirs, ours = pair(Understated(10, claimed=3), num_workers=num_workers,
                        batch_size=batch_size, persistent_workers=persistent,
                        pin_memory=pin_memory)
    length, expected = warned(theirs, 2)
    got_length, got = warned(ours, 2)
    assert got_length == length
    texts = [(c, t) for c, t, _ in expected]
    assert any("Length of IterableDataset" in t for _, t in texts)
    assert [(c, t) for c, t, _ in got] == texts


def test_understated_len_warning_points_at_the_callers_line():
    theirs, ours = pair(Understated(10, claimed=3), num_workers=2, batch_size=2)
    expected = [f for _, t, f in warned(theirs, 1)[1] if "Length of IterableDataset" in t]
    got = [f for _, t, f in warned(ours, 1)[1] if "Length of IterableDataset" in t]
    assert expected and set(expected) == {__file__}
    assert got == expected
