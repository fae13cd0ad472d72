"""state_dict / load_state_dict: a fresh loader resumed from a snapshot taken after any
batch yields, to the bit, what the original would have yielded next (issue #5)."""

from __future__ import annotations

import collections
import io
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._pytree import tree_map
from torch.utils.data import DistributedSampler, TensorDataset

import ferry
from conftest import assert_same_batches
from resumedata import Augmented, Plain, Stream, StreamWithoutState

Make = Callable[[], ferry.DataLoader]


def _copy(batch: Any) -> Any:
    return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, batch)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _global_rng() -> tuple[Any, Any, Any]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _set_global_rng(state: tuple[Any, Any, Any]) -> None:
    torch.set_rng_state(state[0])
    random.setstate(state[1])
    np.random.set_state(state[2])


def _through_torch_save(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # plain data: no pickled objects needed


def uninterrupted(make: Make, epochs: int) -> list[Any]:
    _seed_all(0)
    loader = make()
    return [_copy(b) for _ in range(epochs) for b in loader]


def resumed(make: Make, k: int, epochs: int, full_epochs_before: int = 0) -> list[Any]:
    """`full_epochs_before` epochs and k batches from one loader, then the rest of
    `epochs` epochs from a fresh loader resumed from its state (and the training loop's
    global random state, as a checkpoint would restore it)."""
    _seed_all(0)
    loader = make()
    head = [_copy(b) for _ in range(full_epochs_before) for b in loader]
    epochs -= full_epochs_before
    it = iter(loader)
    head += [_copy(next(it)) for _ in range(k)]
    state = _through_torch_save(loader.state_dict())
    rng = _global_rng()
    del it, loader
    _seed_all(1234)  # the new process's random state is not the old one's
    fresh = make()
    fresh.load_state_dict(state)
    _set_global_rng(rng)
    tail = [_copy(b) for _ in range(epochs) for b in fresh]
    return head + tail


def native(nw: int, **kw: Any) -> Make:
    data = torch.arange(40 * 3).reshape(40, 3)
    return lambda: ferry.DataLoader(TensorDataset(data, data[:, 0]), num_workers=nw, **kw)


def python(nw: int, **kw: Any) -> Make:
    return lambda: ferry.DataLoader(Augmented(), num_workers=nw, **kw)


def threads(**kw: Any) -> Make:
    return lambda: ferry.DataLoader(Plain(), num_workers=2, worker_type="thread", **kw)


def stream(nw: int, with_state: bool = True, **kw: Any) -> Make:
    kind = Stream if with_state else StreamWithoutState
    kw.pop("shuffle", None)  # an IterableDataset has no sampler
    return lambda: ferry.DataLoader(kind(), num_workers=nw, **kw)


CONFIGS: dict[str, Callable[..., Make]] = {
    "native": lambda **kw: native(0, **kw),
    "native-2": lambda **kw: native(2, **kw),
    "python": lambda **kw: python(0, **kw),
    "python-2": lambda **kw: python(2, **kw),
    "python-2-persistent": lambda **kw: python(2, persistent_workers=True, **kw),
    "threads": lambda **kw: threads(**kw),
    "stream": lambda **kw: stream(0, **kw),
    "stream-2": lambda **kw: stream(2, **kw),
    "stream-2-persistent": lambda **kw: stream(2, persistent_workers=True, **kw),
    "stream-2-replayed": lambda **kw: stream(2, with_state=False, **kw),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=st.sampled_from(sorted(CONFIGS)),
    batch_size=st.integers(1, 9),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    generator=st.booleans(),
    k=st.integers(0, 50),
)
def test_resume_matches_an_uninterrupted_run(config, batch_size, shuffle, drop_last, generator, k):
    def make() -> ferry.DataLoader:
        gen = torch.Generator().manual_seed(7) if generator else None
        return CONFIGS[config](
            batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=gen
        )()

    expected = uninterrupted(make, epochs=2)
    k = min(k, len(expected) // 2)  # within the first epoch (its end included)
    assert_same_batches(expected, resumed(make, k, epochs=2))


@pytest.mark.parametrize("config", ["native-2", "python-2", "stream-2"])
def test_resume_after_every_batch_of_an_epoch(config):
    make = CONFIGS[config](batch_size=6, shuffle=True)
    expected = uninterrupted(make, epochs=2)
    for k in range(len(expected) // 2 + 1):
        assert_same_batches(expected, resumed(make, k, epochs=2))


def test_resume_under_spawn():
    make = python(2, batch_size=5, shuffle=True, multiprocessing_context="spawn")
    expected = uninterrupted(make, epochs=1)
    assert_same_batches(expected, resumed(make, 3, epochs=1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ferry.DataLoader(Plain(), batch_size=3, num_workers=2, in_order=False),
        lambda: ferry.DataLoader(Plain(), batch_size=3, num_workers=2, in_order=False,
                                 worker_type="thread"),
        lambda: ferry.DataLoader(TensorDataset(torch.arange(40)), batch_size=3, num_workers=2,
                                 in_order=False),
    ],
    ids=["processes", "threads", "native"],
)
@pytest.mark.parametrize("k", [0, 1, 4, 13])
def test_out_of_order_resume_loses_and_repeats_nothing(make, k):
    def indices(batch: Any) -> list[int]:
        return (batch["i"] if isinstance(batch, dict) else batch[0]).tolist()

    loader = make()
    it = iter(loader)
    seen = [i for _ in range(k) for i in indices(next(it))]
    state = loader.state_dict()
    del it, loader
    fresh = make()
    fresh.load_state_dict(state)
    seen += [i for b in fresh for i in indices(b)]
    counts = collections.Counter(seen)
    assert sorted(counts) == list(range(40)) and set(counts.values()) == {1}, counts


def test_resume_does_not_read_the_skipped_samples():
    def make() -> ferry.DataLoader:
        gen = torch.Generator().manual_seed(3)
        return ferry.DataLoader(Augmented(), batch_size=4, shuffle=True, generator=gen)

    loader = make()
    it = iter(loader)
    head = [next(it) for _ in range(5)]
    state = loader.state_dict()
    rest = list(it)
    fresh = make()
    fresh.load_state_dict(state)
    again = list(fresh)  # (its noise comes from this process's global generators)
    assert [idx.tolist() for _, idx in again] == [idx.tolist() for _, idx in rest]
    read_after = sorted(fresh.dataset.reads)
    assert read_after == sorted(i for _, idx in rest for i in idx.tolist())
    assert not set(read_after) & {i for _, idx in head for i in idx.tolist()}


def test_distributed_sampler_epoch_is_restored():
    ds = TensorDataset(torch.arange(30))

    def make() -> ferry.DataLoader:
        sampler = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=True, seed=5)
        return ferry.DataLoader(ds, batch_size=4, sampler=sampler)

    loader = make()
    loader.sampler.set_epoch(3)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    rest = [_copy(b) for b in it]
    fresh = make()
    fresh.load_state_dict(state)
    assert fresh.sampler.epoch == 3
    assert_same_batches(rest, [_copy(b) for b in fresh])


def test_state_between_epochs_starts_the_next_epoch():
    data = torch.arange(40)

    def make() -> ferry.DataLoader:
        gen = torch.Generator().manual_seed(1)
        return ferry.DataLoader(TensorDataset(data), batch_size=8, shuffle=True, generator=gen)

    expected = uninterrupted(make, epochs=3)
    loader = make()
    for _ in range(2):
        list(loader)
    fresh = make()
    fresh.load_state_dict(loader.state_dict())
    assert_same_batches(expected[2 * len(loader):], list(fresh))


# --- bad states -------------------------------------------------------------------------
def _state_after(make: Make, k: int) -> dict:
    loader = make()
    it = iter(loader)
    for _ in range(k):
        next(it)
    return loader.state_dict()


@pytest.mark.parametrize(
    "other, what",
    [
        (lambda: ferry.DataLoader(TensorDataset(torch.arange(41)), batch_size=4), "dataset_length"),
        (lambda: ferry.DataLoader(TensorDataset(torch.arange(40)), batch_size=5), "batch_size"),
        (lambda: ferry.DataLoader(TensorDataset(torch.arange(40)), batch_size=4, shuffle=True),
         "sampler"),
        (lambda: ferry.DataLoader(TensorDataset(torch.arange(40)), batch_size=4, num_workers=2),
         "num_workers"),
    ],
)
def test_a_state_from_another_configuration_is_rejected(other, what):
    state = _state_after(lambda: ferry.DataLoader(TensorDataset(torch.arange(40)), batch_size=4), 2)
    with pytest.raises(ValueError, match=what):
        other().load_state_dict(state)


def test_a_corrupted_state_is_rejected():
    make = python(2, batch_size=4, shuffle=True)
    state = _state_after(make, 3)
    state["iterator"]["epoch"]["yielded"] += 1
    with pytest.raises(ValueError, match="corrupted"):
        make().load_state_dict(state)
    state = _state_after(make, 3)
    state["iterator"]["workers"][0]["rng"]["torch"][100] ^= 1
    with pytest.raises(ValueError, match="corrupted"):
        make().load_state_dict(state)


@pytest.mark.parametrize("state", [None, {}, {"iterator": None}, [1, 2]])
def test_not_a_state_is_rejected(state):
    with pytest.raises(ValueError, match="not a ferry.DataLoader state_dict"):
        ferry.DataLoader(TensorDataset(torch.arange(4))).load_state_dict(state)


# --- found in review ---------------------------------------------------------------------
@pytest.mark.parametrize("config", ["python-2-persistent", "stream-2-persistent", "stream"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_in_a_later_epoch(config, drop_last):
    make = CONFIGS[config](batch_size=4, shuffle=True, drop_last=drop_last)
    expected = uninterrupted(make, epochs=3)
    per_epoch = len(expected) // 3
    for k in (0, 1, per_epoch):
        assert_same_batches(expected, resumed(make, k, epochs=3, full_epochs_before=1))


@pytest.mark.parametrize("config", ["python-2", "stream", "stream-2"])
def test_a_resumed_loader_snapshotted_before_iterating_resumes_again(config):
    make = CONFIGS[config](batch_size=4, shuffle=True)
    expected = uninterrupted(make, epochs=1)
    _seed_all(0)
    loader = make()
    it = iter(loader)
    head = [_copy(next(it)) for _ in range(3)]
    rng = _global_rng()
    fresh = make()
    fresh.load_state_dict(loader.state_dict())
    again = make()
    again.load_state_dict(fresh.state_dict())  # loaded, not iterated yet; `it` still alive
    _set_global_rng(rng)
    assert_same_batches(expected, head + [_copy(b) for b in again])


def test_persistent_workers_after_a_break_mid_epoch():
    make = python(2, batch_size=4, shuffle=True, persistent_workers=True)

    def run(k_resume: int | None) -> list[Any]:
        _seed_all(0)
        loader = make()
        it = iter(loader)
        out = [_copy(next(it)) for _ in range(3)]  # break: prefetched batches are dropped
        it = iter(loader)
        out += [_copy(next(it)) for _ in range(k_resume or 0)]
        if k_resume is None:
            return out + [_copy(b) for b in it]
        state, rng = loader.state_dict(), _global_rng()
        fresh = make()
        fresh.load_state_dict(state)
        _set_global_rng(rng)
        return out + [_copy(b) for b in fresh]

    expected = run(None)
    for k in (0, 2):
        assert_same_batches(expected, run(k))


class _Batches:
    """A batch sampler that is not a BatchSampler, over a sampler with a generator."""

    def __init__(self, sampler: Any, size: int) -> None:
        self.sampler, self.size = sampler, size

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.size)


class _PythonShuffle(torch.utils.data.Sampler):
    """Shuffles with Python's random at the start of each epoch (a bucket sampler's way)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        order = list(range(self.n))
        random.shuffle(order)
        return iter(order)

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("kind", ["custom-batch-sampler", "python-random-sampler"])
def test_samplers_with_their_own_randomness(kind, nw):
    def make() -> ferry.DataLoader:
        if kind == "custom-batch-sampler":
            gen = torch.Generator().manual_seed(5)
            bs = _Batches(torch.utils.data.RandomSampler(range(40), generator=gen), 4)
            return ferry.DataLoader(Plain(), batch_sampler=bs, num_workers=nw)
        return ferry.DataLoader(Plain(), batch_size=4, sampler=_PythonShuffle(40), num_workers=nw)

    expected = uninterrupted(make, epochs=2)
    for k in (0, 3):
        assert_same_batches(expected, resumed(make, k, epochs=2))
    assert_same_batches(expected, resumed(make, 3, epochs=2, full_epochs_before=1))
