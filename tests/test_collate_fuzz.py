"""Hypothesis fuzzing of the worker path's collation and transport (stacking into the
slot, pickling with tensors by reference, unpacking into views) against torch's own
workers, over random nested structures, dtypes and shapes."""

from __future__ import annotations

import collections

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset

import ferry
from conftest import assert_same_batches

Point = collections.namedtuple("Point", "x y")
DTYPES = [torch.uint8, torch.int16, torch.int64, torch.float16, torch.bfloat16, torch.float32,
          torch.float64, torch.bool, torch.complex64]
NP_DTYPES = [np.uint8, np.int32, np.float32, np.float64, np.bool_]


def leaf_schema():
    shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
    return st.one_of(
        st.tuples(st.just("tensor"), st.sampled_from(DTYPES), shapes),
        st.tuples(st.just("numpy"), st.sampled_from(NP_DTYPES), shapes),
        st.tuples(st.just("int")),
        st.tuples(st.just("float")),
        st.tuples(st.just("str")),
    )


schemas = st.recursive(
    leaf_schema(),
    lambda inner: st.one_of(
        st.tuples(st.just("dict"), st.dictionaries(st.sampled_from("abcde"), inner, min_size=1,
                                                   max_size=3)),
        st.tuples(st.just("list"), st.lists(inner, min_size=1, max_size=3)),
        st.tuples(st.just("tuple"), st.lists(inner, min_size=1, max_size=3)),
        st.tuples(st.just("point"), inner, inner),
    ),
    max_leaves=6,
)


def make(schema, g: torch.Generator):
    kind = schema[0]
    if kind == "tensor":
        _, dtype, shape = schema
        raw = torch.randint(0, 100, shape, generator=g)
        return (raw % 2 == 1) if dtype == torch.bool else raw.to(dtype)
    if kind == "numpy":
        _, dtype, shape = schema
        return torch.randint(0, 100, shape, generator=g).numpy().astype(dtype)
    if kind == "int":
        return int(torch.randint(0, 1000, (), generator=g))
    if kind == "float":
        return float(torch.rand((), generator=g, dtype=torch.float64))
    if kind == "str":
        return f"s{int(torch.randint(0, 1000, (), generator=g))}"
    if kind == "dict":
        return {k: make(v, g) for k, v in schema[1].items()}
    if kind == "list":
        return [make(v, g) for v in schema[1]]
    if kind == "tuple":
        return tuple(make(v, g) for v in schema[1])
    return Point(make(schema[1], g), make(schema[2], g))


class Samples(Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, n=st.integers(1, 9), batch_size=st.integers(1, 4),
       unbatched=st.booleans(), seed=st.integers(0, 2**16))
def test_worker_batches_equal_torch_workers(schema, n, batch_size, unbatched, seed):
    g = torch.Generator().manual_seed(seed)
    ds = Samples([make(schema, g) for _ in range(n)])
    kw = {"batch_size": None} if unbatched else {"batch_size": batch_size}
    expected = list(TorchDataLoader(ds, num_workers=1, **kw))
    it = iter(ferry.DataLoader(ds, num_workers=1, **kw))
    assert it.path == "workers"
    assert_same_batches(expected, list(it))
