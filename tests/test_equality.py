"""ferry yields torch's batches, bit for bit, over random combinations of datasets,
dtypes, shapes and sampling arguments. The reference is torch's DataLoader, run in the
test with an equal generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import (
    BatchSampler,
    ConcatDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

import ferry
from conftest import assert_same_batches

DTYPES = [
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.bool,
]
ROW_SHAPES = [(), (3,), (2, 3), (1, 4, 1), (3, 5, 2)]


def random_tensor(n: int, row_shape: tuple[int, ...], dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n, *row_shape), generator=g, dtype=torch.int64)
    if dtype == torch.bool:
        return raw % 2 == 1
    if dtype.is_complex:
        return torch.complex(raw.float(), -raw.float()).to(dtype)
    if dtype.is_floating_point:
        return (raw.double() / 7 - 10).to(dtype)
    return (raw - 128).to(dtype) if dtype in (torch.int8,) else raw.to(dtype)


def make_array(kind: str, n: int, row_shape, dtype, seed: int):
    """An array of n rows in one of several memory layouts."""
    t = random_tensor(n, row_shape, dtype, seed)
    if kind == "contiguous":
        return t
    if kind == "strided":  # every other row of a larger tensor, rows transposed
        big = random_tensor(2 * n, tuple(reversed(row_shape)), dtype, seed)
        return big[::2].permute(0, *range(len(row_shape), 0, -1))
    if kind == "numpy":
        return t.numpy() if dtype != torch.bfloat16 else t
    if kind == "numpy_reversed":
        return t.numpy()[::-1] if dtype != torch.bfloat16 else t.flip(0)
    raise AssertionError(kind)


@st.composite
def datasets(draw):
    n = draw(st.integers(1, 40))
    columns = draw(
        st.lists(
            st.tuples(st.sampled_from(DTYPES), st.sampled_from(ROW_SHAPES)), min_size=1, max_size=3
        )
    )
    seed = draw(st.integers(0, 2**16))

    def leaf(rows: int, salt: int):
        layouts = st.sampled_from(["contiguous", "strided", "numpy", "numpy_reversed"])
        kinds = [draw(layouts) for _ in columns]
        arrays = [
            make_array(k, rows, s, d, seed + salt + i)
            for i, (k, (d, s)) in enumerate(zip(kinds, columns, strict=True))
        ]
        if all(isinstance(a, torch.Tensor) for a in arrays) and draw(st.booleans()):
            return TensorDataset(*arrays)
        return ferry.ArrayDataset(*arrays)

    shape = draw(st.sampled_from(["leaf", "subset", "concat", "nested"]))
    if shape == "leaf":
        return leaf(n, 0)
    if shape == "subset":
        base = leaf(n, 0)
        idx = draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=2 * n))
        return Subset(base, idx)
    parts = [leaf(draw(st.integers(1, 12)), 100 * k) for k in range(draw(st.integers(1, 3)))]
    if shape == "concat":
        return ConcatDataset(parts)
    inner = ConcatDataset([Subset(p, list(range(len(p)))[::-1]) for p in parts])
    return Subset(inner, draw(st.permutations(list(range(len(inner))))))


@st.composite
def loader_args(draw, length: int):
    mode = draw(st.sampled_from(["batch_size", "batch_sampler", "unbatched", "sampler"]))
    kw: dict = {}
    if mode == "batch_size":
        kw["batch_size"] = draw(st.integers(1, length + 3))
        kw["shuffle"] = draw(st.booleans())
        kw["drop_last"] = draw(st.booleans())
    elif mode == "unbatched":
        kw["batch_size"] = None
        kw["shuffle"] = draw(st.booleans())
    elif mode == "batch_sampler":
        kw["batch_sampler"] = "make"  # built per loader: it holds the generator
        kw["_bs"] = (draw(st.integers(1, length + 2)), draw(st.booleans()))
    else:
        kw["sampler"] = draw(st.sampled_from(["replacement", "subset", "weighted"]))
        kw["batch_size"] = draw(st.integers(1, 8))
    kw["num_workers"] = draw(st.sampled_from([0, 0, 2]))
    return kw


def build(loader_cls, ds, kw: dict, seed: int):
    kw = dict(kw)
    g = torch.Generator().manual_seed(seed)
    n = len(ds)
    if kw.get("batch_sampler") == "make":
        bs, drop = kw.pop("_bs")
        kw["batch_sampler"] = BatchSampler(RandomSampler(ds, generator=g), bs, drop)
    elif isinstance(kw.get("sampler"), str):
        which = kw["sampler"]
        if which == "replacement":
            kw["sampler"] = RandomSampler(ds, replacement=True, num_samples=n + 5, generator=g)
        elif which == "subset":
            kw["sampler"] = SubsetRandomSampler(list(range(0, n, 2)), generator=g)
        else:
            kw["sampler"] = WeightedRandomSampler([1.0 + i % 3 for i in range(n)], n, generator=g)
    return loader_cls(ds, generator=g, **kw)


def run_both(ds, kw: dict, seed: int, epochs: int = 1, path: str | None = "native"):
    torch_loader = build(torch.utils.data.DataLoader, ds, kw, seed)
    ferry_loader = build(ferry.DataLoader, ds, kw, seed)
    assert len(ferry_loader) == len(torch_loader)
    for _ in range(epochs):
        expected = list(torch_loader)
        it = iter(ferry_loader)
        if path is not None:
            assert it.path == path, "array datasets must take the native path"
        assert_same_batches(expected, list(it))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_same_batches_as_torch(data):
    ds = data.draw(datasets())
    kw = data.draw(loader_args(len(ds)))
    if kw["num_workers"] and data.draw(st.booleans()):
        kw["persistent_workers"] = True
    seed = data.draw(st.integers(0, 2**31))
    run_both(ds, kw, seed, epochs=2)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_global_random_state_consumed_as_torch(num_workers):
    """With no generator, the loader draws from the global RNG, in torch's order and
    amount: after an epoch both leave the global generator in the same state."""
    ds = TensorDataset(torch.arange(50), torch.arange(50).float())

    def epoch(cls):
        torch.manual_seed(1234)
        batches = list(cls(ds, batch_size=8, shuffle=True, num_workers=num_workers))
        return batches, torch.rand(3)

    expected, after_torch = epoch(torch.utils.data.DataLoader)
    got, after_ferry = epoch(ferry.DataLoader)
    assert_same_batches(expected, got)
    assert torch.equal(after_torch, after_ferry)


class EagerSampler(torch.utils.data.Sampler):
    """Draws its whole order from the global generator when iter() is called."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(torch.randperm(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class PythonRows(torch.utils.data.Dataset):
    def __getitem__(self, i: int):
        return torch.tensor([i])

    def __len__(self) -> int:
        return 32


@pytest.mark.parametrize("dataset", ["native", "python"])
@pytest.mark.parametrize("batch_size", [3, None])
@pytest.mark.parametrize("workers", [0, 2, "threads"])
def test_a_sampler_drawing_when_iterated_draws_as_with_torch(workers, batch_size, dataset):
    # torch's worker iterator iterates the sampler twice for its first epoch (its
    # constructor and its _reset both call iter()); a sampler that draws in __iter__
    # (not a generator) draws twice, and the first order goes unused.
    ds = TensorDataset(torch.arange(20)) if dataset == "native" else PythonRows()
    num_workers = 2 if workers == "threads" else workers
    extra = {"worker_type": "thread"} if workers == "threads" else {}

    def two_epochs(cls):
        torch.manual_seed(7)
        kw = extra if cls is ferry.DataLoader else {}
        loader = cls(ds, sampler=EagerSampler(20), batch_size=batch_size,
                     num_workers=num_workers, **kw)
        return [list(loader) for _ in range(2)], torch.rand(2)

    (e1, e2), after_torch = two_epochs(torch.utils.data.DataLoader)
    (g1, g2), after_ferry = two_epochs(ferry.DataLoader)
    assert_same_batches(e1 + e2, g1 + g2)
    assert torch.equal(after_torch, after_ferry)


class LazyGlobalSampler(torch.utils.data.Sampler):
    """Draws each index from the global generator as it is asked for; with `fail_at`,
    raises instead of yielding that many-th index."""

    def __init__(self, n: int, fail_at: int | None = None) -> None:
        self.n = n
        self.fail_at = fail_at

    def __iter__(self):
        for k in range(self.n):
            if k == self.fail_at:
                raise KeyError(f"sampler gave up at {k}")
            yield int(torch.randint(self.n, ()))

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("dataset", ["native", "python"])
@pytest.mark.parametrize("workers", [0, 2, "threads"])
def test_sampler_drawn_as_far_ahead_as_torch_draws_it(workers, dataset):
    # The consumer draws from the global generator too (dropout would): the batches are
    # the same only if the sampler is drawn at the same moments. And a sampler's error
    # comes after as many batches as with torch.
    ds = TensorDataset(torch.arange(32)) if dataset == "native" else PythonRows()
    num_workers = 2 if workers == "threads" else workers
    extra = {"worker_type": "thread"} if workers == "threads" else {}

    def run(cls, fail_at=None):
        torch.manual_seed(0)
        kw = extra if cls is ferry.DataLoader else {}
        out: list = []
        loader = cls(ds, batch_size=4, sampler=LazyGlobalSampler(20, fail_at),
                     num_workers=num_workers, **kw)
        try:
            for batch in loader:
                out.append(batch)
                torch.rand(1)
        except KeyError as e:
            out.append(str(e))
        return out

    for fail_at in (None, 10):
        expected = run(torch.utils.data.DataLoader, fail_at)
        got = run(ferry.DataLoader, fail_at)
        assert len(got) == len(expected)
        if fail_at is not None:
            assert isinstance(expected[-1], str) and got[-1] == expected[-1]
            expected, got = expected[:-1], got[:-1]
        assert_same_batches(expected, got)


@pytest.mark.parametrize(
    "make_sampler",
    [
        lambda ds, g: RandomSampler(ds, generator=g),
        lambda ds, g: RandomSampler(ds, num_samples=40, generator=g),
        lambda ds, g: RandomSampler(ds, num_samples=27, generator=g),
        lambda ds, g: RandomSampler(ds, replacement=True, num_samples=70, generator=g),
    ],
    ids=["epoch", "two-permutations", "permutation-and-a-part", "replacement"],
)
def test_without_workers_the_generator_moves_when_torch_moves_it(make_sampler):
    # Batches read ahead must not draw the sampler's next permutation early: code that
    # draws from the same generator between batches sees what it sees with torch.
    ds = TensorDataset(torch.arange(20))

    def states(cls):
        g = torch.Generator().manual_seed(3)
        loader = cls(ds, sampler=make_sampler(ds, g), batch_size=3)
        return [(batch, g.get_state()) for batch in loader] + [(None, g.get_state())]

    expected = states(torch.utils.data.DataLoader)
    got = states(ferry.DataLoader)
    assert len(got) == len(expected)
    for k, ((eb, es), (gb, gs)) in enumerate(zip(expected, got, strict=True)):
        if eb is not None:
            assert_same_batches([eb], [gb])
        assert torch.equal(es, gs), f"generator moved differently by batch {k}"


def test_memmap_dataset(tmp_path):
    path = tmp_path / "images.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=(300, 3, 4, 4))
    mm[:] = np.random.default_rng(0).integers(0, 256, mm.shape, dtype=np.uint8)
    mm.flush()
    ro = np.memmap(path, dtype=np.uint8, mode="r", shape=(300, 3, 4, 4))
    labels = np.arange(300, dtype=np.int64)
    ds = ferry.ArrayDataset(ro, labels)
    run_both(ds, {"batch_size": 32, "shuffle": True, "num_workers": 2}, seed=5)


def test_sequential_sampler_and_custom_iterable_sampler():
    ds = TensorDataset(torch.arange(30).view(10, 3))
    run_both(ds, {"sampler": SequentialSampler(ds), "batch_size": 4}, seed=0)
    run_both(ds, {"sampler": [9, -1, 0, -10, 3], "batch_size": 2}, seed=0)
    run_both(ds, {"batch_sampler": [[1, 2], [-3], [0, 0, 0]]}, seed=0)
    index_tensors = [torch.tensor([1, 2]), torch.tensor([-3]),
                     torch.tensor([0, 0], dtype=torch.int32)]
    run_both(ds, {"batch_sampler": index_tensors}, seed=0)
    # unbatched: a one-element tensor indexes with its shape kept, a 0-d one without
    run_both(ds, {"sampler": [torch.tensor([3]), torch.tensor(4)], "batch_size": None}, seed=0)
    # a 0-d uint8 or bool tensor is a mask to torch, not an index
    masks = [torch.tensor(1, dtype=torch.uint8), torch.tensor(True), torch.tensor(2)]
    run_both(ds, {"sampler": masks, "batch_size": None}, seed=0)
    masks = [torch.tensor(1, dtype=torch.uint8), torch.tensor(True)]
    run_both(ds, {"sampler": masks, "batch_size": 2}, seed=0)


def test_concat_dataset_indexed_with_its_stored_sizes():
    # torch maps indices with the sizes the ConcatDataset stored when it was made
    grown = Subset(TensorDataset(torch.arange(100)), [0, 1, 2])
    ds = ConcatDataset([grown, TensorDataset(torch.arange(1000, 1005))])
    grown.indices.append(50)
    run_both(ds, {"batch_size": 3}, seed=0, path=None)


def test_in_order_false_yields_the_same_batches_in_some_order():
    ds = TensorDataset(torch.arange(1000), torch.arange(1000) * 2)
    expected = list(torch.utils.data.DataLoader(ds, batch_size=10))
    got = list(ferry.DataLoader(ds, batch_size=10, num_workers=2, in_order=False))
    key = lambda b: b[0][0].item()  # noqa: E731
    assert_same_batches(sorted(expected, key=key), sorted(got, key=key))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_distributed_sampler_per_rank(num_workers):
    """DistributedSampler as a plain sampler (explicit replicas and rank, no process
    group): each rank's batches are torch's, and set_epoch reshuffles them alike."""
    from torch.utils.data import DistributedSampler

    ds = TensorDataset(torch.arange(101), torch.arange(101) * 3)
    for rank in range(3):
        samplers = [DistributedSampler(ds, num_replicas=3, rank=rank, shuffle=True, seed=7)
                    for _ in range(2)]
        theirs = torch.utils.data.DataLoader(ds, batch_size=8, sampler=samplers[0])
        ours = ferry.DataLoader(ds, batch_size=8, sampler=samplers[1], num_workers=num_workers)
        for epoch in range(2):
            samplers[0].set_epoch(epoch)
            samplers[1].set_epoch(epoch)
            it = iter(ours)
            assert it.path == "native"
            assert_same_batches(list(theirs), list(it))
