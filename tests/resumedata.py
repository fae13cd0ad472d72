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
