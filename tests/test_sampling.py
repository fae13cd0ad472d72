"""torch's stock batch samplers drawn as tensors (ferry._sampling): the same batches as
torch's, with the generators in the same state after every batch and at the end."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, SequentialSampler

from ferry._sampling import stock_batches


def steps(it, rng_state):
    """Each batch (as a list) with the generator's state after it; the end as None."""
    out = []
    while True:
        try:
            batch = next(it)
        except StopIteration:
            out.append((None, rng_state()))
            return out
        out.append((batch.tolist() if isinstance(batch, torch.Tensor) else batch, rng_state()))


def run(make_sampler, batch_size, drop_last, own_generator):
    """torch's BatchSampler and ferry's stock_batches over equal samplers, step by step."""
    runs = []
    for ferry_side in (False, True):
        torch.manual_seed(1234)  # the global generator, drawn from without a generator
        g = torch.Generator().manual_seed(99) if own_generator else None
        batches = BatchSampler(make_sampler(g), batch_size, drop_last)
        it = stock_batches(batches) if ferry_side else iter(batches)
        assert it is not None
        state = (lambda g=g: g.get_state()) if own_generator else torch.get_rng_state
        runs.append(steps(it, state))
    expected, got = runs
    assert [b for b, _ in got] == [b for b, _ in expected]
    for k, ((_, want), (_, have)) in enumerate(zip(expected, got, strict=True)):
        assert torch.equal(want, have), f"generator state differs after step {k}"


@pytest.mark.parametrize("own_generator", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 10])
@pytest.mark.parametrize(
    "n, num_samples",
    [(1, None), (7, None), (8, None), (10, 3), (10, 20), (10, 23), (4, 12), (5, 1)],
)
def test_random_sampler(n, num_samples, batch_size, drop_last, own_generator):
    data = range(n)
    run(lambda g: RandomSampler(data, num_samples=num_samples, generator=g),
        batch_size, drop_last, own_generator)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n, batch_size", [(0, 2), (1, 1), (7, 3), (9, 3), (5, 8)])
def test_sequential_sampler(n, batch_size, drop_last):
    run(lambda g: SequentialSampler(range(n)), batch_size, drop_last, own_generator=True)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("n, replicas", [(10, 3), (12, 4), (2, 5), (0, 2), (7, 1), (1, 3)])
def test_distributed_sampler(n, replicas, drop_last, shuffle):
    for rank in range(replicas):
        for epoch in (0, 3):
            def make(g, rank=rank, epoch=epoch):
                s = DistributedSampler(range(n), replicas, rank, shuffle, seed=5,
                                       drop_last=drop_last)
                s.set_epoch(epoch)
                return s
            for batch_size, batch_drop in ((2, False), (3, True)):
                run(make, batch_size, batch_drop, own_generator=False)


def test_distributed_sampler_over_a_dataset_that_changed_length():
    data = list(range(10))
    for grown in (3, 20):
        s = DistributedSampler(data, 3, 1, shuffle=True, seed=1)
        data.extend(range(grown))
        expected = got = None
        try:
            expected = list(BatchSampler(s, 2, False))
        except AssertionError as e:
            expected = str(e)
        try:
            got = [b.tolist() for b in stock_batches(BatchSampler(s, 2, False))]
        except AssertionError as e:
            got = str(e)
        assert got == expected
        del data[10:]


def test_a_stopped_iterator_stays_stopped():
    g = torch.Generator().manual_seed(0)
    it = stock_batches(BatchSampler(RandomSampler(range(5), generator=g), 2, False))
    assert len(list(it)) == 3
    state = g.get_state()
    assert list(itertools.islice(it, 3)) == []
    assert torch.equal(g.get_state(), state)


class MyRandomSampler(RandomSampler):
    pass


class MyBatchSampler(BatchSampler):
    pass


@pytest.mark.parametrize(
    "index_sampler",
    [
        BatchSampler(RandomSampler(range(5), replacement=True), 2, False),
        BatchSampler(MyRandomSampler(range(5)), 2, False),
        MyBatchSampler(RandomSampler(range(5)), 2, False),
        RandomSampler(range(5)),  # batch_size=None: one index at a time
        [[0, 1], [2]],
    ],
)
def test_other_samplers_are_iterated_by_torch(index_sampler):
    assert stock_batches(index_sampler) is None
