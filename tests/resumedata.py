"""Datasets for the resume tests (a module of their own, so that workers can import them)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info


class Augmented(Dataset):
    """Each sample draws from torch's, numpy's and Python's generators, like a random
    crop or flip: resume must restore the workers' generators to reproduce it."""

    def __init__(self, n: int = 40) -> None:
        self.n = n
        self.reads: list[int] = []  # indices read in this process

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.reads.append(i)
        noise = torch.tensor(
            [random.randint(0, 10**6), int(np.random.randint(0, 10**6)),
             int(torch.randint(0, 10**6, ()))]
        )
        return noise, i


class Plain(Dataset):
    """Deterministic samples (for thread workers, which share one set of generators)."""

    def __init__(self, n: int = 40) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, object]:
        return {"x": torch.full((2,), float(i)), "i": i}


def _shard(n: int) -> tuple[list[int], int]:
    info = get_worker_info()
    wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    # uneven shards, so that workers run out at different batches
    return list(range(wid, n + 5 * wid, workers)), wid


class Stream(IterableDataset):
    """An IterableDataset that keeps its position, torchdata-style: state_dict() says
    where its iterator is, load_state_dict() makes the next iter() continue there."""

    def __init__(self, n: int = 30) -> None:
        self.n = n
        self.pos = 0

    def __iter__(self):
        items, _ = _shard(self.n)
        for k in range(self.pos, len(items)):
            self.pos = k + 1
            yield torch.tensor([items[k], random.randint(0, 1000)])
        self.pos = 0  # the next epoch starts over

    def state_dict(self) -> dict[str, int]:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pos = state["pos"]


class StreamWithoutState(IterableDataset):
    """An IterableDataset with no state_dict: resume replays its epoch."""

    def __init__(self, n: int = 30) -> None:
        self.n = n

    def __iter__(self):
        items, _ = _shard(self.n)
        for item in items:
            yield torch.tensor([item, random.randint(0, 1000)])


# --- checkpoint patterns (issue 13) ---------------------------------------------------------
class SelfIterating(IterableDataset):
    """Its own iterator (`__iter__` returns self, torchdata's pattern): the position and a
    generator live on the object, made by `__iter__`, so `load_state_dict` works only once
    `iter()` has made them."""

    def __init__(self, n: int = 30) -> None:
        self.n = n
        self.epoch = 0

    def __iter__(self) -> SelfIterating:
        self._items, wid = _shard(self.n)
        self._k = 0
        self._gen = torch.Generator().manual_seed(1000 * self.epoch + wid)
        self.epoch += 1
        return self

    def __next__(self) -> torch.Tensor:
        if self._k >= len(self._items):
            raise StopIteration
        self._k += 1
        draw = int(torch.randint(1000, (), generator=self._gen))
        return torch.tensor([self._items[self._k - 1], draw])

    def state_dict(self) -> dict[str, object]:
        return {"k": self._k, "gen": self._gen.get_state(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self._k = state["k"]
        self._gen.set_state(state["gen"])
        self.epoch = state["epoch"]


class InPlaceState(IterableDataset):
    """`state_dict()` returns the dict it keeps updating, and `load_state_dict()` keeps the
    dict it is given (no copies, as many datasets do)."""

    def __init__(self, n: int = 40) -> None:
        self.n = n
        self.state = {"pos": 0}

    def __iter__(self):
        items, _ = _shard(self.n)
        while self.state["pos"] < len(items):
            self.state["pos"] += 1
            yield torch.tensor([items[self.state["pos"] - 1]])
        self.state["pos"] = 0

    def state_dict(self) -> dict[str, int]:
        return self.state

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.state = state


class OwnGenerator(Dataset):
    """A map-style dataset drawing from a generator of its own, which its state_dict() keeps."""

    def __init__(self, n: int = 40) -> None:
        self.n = n
        self.gen = torch.Generator().manual_seed(17)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i, int(torch.randint(10**6, (), generator=self.gen))])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["gen"])


class StatefulIterator(IterableDataset):
    """No state_dict of its own; its iterator has one. The iterator draws from the dataset's
    generator, which goes on across epochs (so replaying an epoch from its start would not
    give its batches again)."""

    def __init__(self, n: int = 30) -> None:
        self.n = n
        self.gen = torch.Generator().manual_seed(5)

    def __iter__(self) -> _Draws:
        return _Draws(self)


class _Draws:
    def __init__(self, ds: StatefulIterator) -> None:
        self.items, _ = _shard(ds.n)
        self.gen = ds.gen
        self.k = 0

    def __iter__(self) -> _Draws:
        return self

    def __next__(self) -> torch.Tensor:
        if self.k >= len(self.items):
            raise StopIteration
        self.k += 1
        draw = int(torch.randint(1000, (), generator=self.gen))
        return torch.tensor([self.items[self.k - 1], draw])

    def state_dict(self) -> dict[str, object]:
        return {"k": self.k, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.k = state["k"]
        self.gen.set_state(state["gen"])
