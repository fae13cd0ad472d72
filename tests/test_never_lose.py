"""Never lose or corrupt a batch: batches held across many later ones, two loaders
interleaved, in_order=False, every delivered value checked against the dataset."""

from __future__ import annotations

import collections
import itertools

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

import ferry

N = 300


class Checkable(Dataset):
    """Sample i: a 16-element tensor whose values are a function of i, plus i."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.arange(16, dtype=torch.int64) * 1000 + i, i


def expected_row(i: int) -> torch.Tensor:
    return torch.arange(16, dtype=torch.int64) * 1000 + i


def _tensor_dataset() -> TensorDataset:
    ids = torch.arange(N)
    return TensorDataset(torch.stack([expected_row(i) for i in range(N)]), ids)


def loaders() -> dict[str, ferry.DataLoader]:
    common = {"batch_size": 7, "shuffle": True, "in_order": False}
    return {
        "native": ferry.DataLoader(_tensor_dataset(), num_workers=2, **common),
        "processes": ferry.DataLoader(Checkable(), num_workers=2, **common),
        "threads": ferry.DataLoader(Checkable(), num_workers=2, worker_type="thread", **common),
    }


def check(batch: tuple[torch.Tensor, torch.Tensor], where: str) -> list[int]:
    rows, ids = batch
    for row, i in zip(rows, ids.tolist(), strict=True):
        assert torch.equal(row, expected_row(i)), f"{where}: sample {i} corrupted: {row}"
    return ids.tolist()


@pytest.mark.parametrize("first, second", list(itertools.combinations(loaders(), 2)))
def test_two_loaders_interleaved_holding_every_batch(first, second):
    made = loaders()
    held: dict[str, list] = {first: [], second: []}
    its = {name: iter(made[name]) for name in held}
    live = set(held)
    step = 0
    while live:  # alternate, uneven: 1 batch of one, 2 of the other
        name = sorted(live)[step % len(live)]
        for _ in range(1 + step % 2):
            try:
                held[name].append(next(its[name]))
            except StopIteration:
                live.discard(name)
                break
        step += 1
    for name, batches in held.items():  # checked only now, after every later batch
        ids = [i for k, b in enumerate(batches) for i in check(b, f"{name} batch {k}")]
        counts = collections.Counter(ids)
        assert sorted(counts) == list(range(N)) and set(counts.values()) == {1}, name


@pytest.mark.parametrize("name", list(loaders()))
def test_three_epochs_held_then_checked(name):
    loader = loaders()[name]
    epochs = [list(loader) for _ in range(3)]
    for e, batches in enumerate(epochs):
        ids = [i for k, b in enumerate(batches) for i in check(b, f"epoch {e} batch {k}")]
        assert sorted(ids) == list(range(N))
