"""Datasets for the worker tests, in a module of their own so that spawned workers can
import them."""

from __future__ import annotations

import collections
import ctypes
import math
import os
import random
import signal
import time

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

Pair = collections.namedtuple("Pair", "left right")


class Mixed(Dataset):
    """Every kind of leaf default_collate knows: tensors, numpy, ints, floats, strings,
    dicts, namedtuples, lists, plus values drawn from all three random generators (so
    worker seeding must match torch's)."""

    def __init__(self, n: int = 60) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = np.random.default_rng(i)
        return {
            "image": torch.from_numpy(g.integers(0, 256, (3, 4, 5), dtype=np.uint8)),
            "array": g.random((2, 3)),
            "label": i,
            "weight": float(i) / 7,
            "id": f"sample-{i}",
            "pair": Pair(np.int16(i), [i, -i]),
            "random": (torch.rand(2), np.random.rand(), random.random()),
        }


class Ragged(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        return torch.zeros(i % 3 + 1)


class Tensors(Dataset):
    """Three tensors per sample, values derived from the index (checkable)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.full((4,), i, dtype=torch.int64), torch.tensor(float(i)), torch.arange(3) + i


class Shards(IterableDataset):
    """Each worker yields its share of range(n), as torch's docs suggest."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        if info is None:
            return iter(range(self.n))
        per = math.ceil(self.n / info.num_workers)
        start = info.id * per
        return iter(range(start, min(start + per, self.n)))


class WhoAmI(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int):
        info = get_worker_info()
        return {"i": i, "worker": info.id, "seed": info.seed, "init": INIT_CALLS.get("id", -1)}


INIT_CALLS: dict[str, int] = {}


def record_init(worker_id: int) -> None:
    INIT_CALLS["id"] = worker_id * 100


class Failing(Dataset):
    def __init__(self, how: str, at: int = 13) -> None:
        self.how = how
        self.at = at

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):
        if i == self.at:
            if self.how == "raise":
                raise KeyError(f"no sample {i}")
            if self.how == "exit":
                os._exit(3)
            if self.how == "exit0":
                os._exit(0)
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "segv":
                ctypes.string_at(0)
            if self.how == "sleep":
                time.sleep(30)
        return i


def collate_to_dict(batch):
    return {"sum": torch.stack([b["image"] for b in batch]).sum(0), "n": len(batch),
            "ids": [b["id"] for b in batch]}


class Growing(Dataset):
    """Samples that grow with the index: with a sequential sampler every batch is larger
    than the last (padded sequences sorted by length do this)."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int):
        return torch.arange(8 * (i + 1), dtype=torch.float64).view(-1, 8)[:1].expand(i + 1, 8) + i


def pad_collate(batch):
    longest = max(len(b) for b in batch)
    out = torch.zeros(len(batch), longest, 8, dtype=torch.float64)
    for k, b in enumerate(batch):
        out[k, : len(b)] = b
    return out


def layouts_collate(batch):
    """A collate_fn whose outputs are dense but not contiguous (channels_last, permuted),
    or views that are not dense (a strided slice, an expanded row)."""
    x = torch.stack([b[0].view(1, 2, 2).expand(3, 2, 2) * torch.arange(1, 4).view(3, 1, 1)
                     for b in batch])
    return {"channels_last": x.float().contiguous(memory_format=torch.channels_last),
            "permuted": x.permute(2, 3, 0, 1),
            "sliced": x[:, :, ::2],
            "expanded": batch[0][2].expand(5, 3)}


def aliasing_collate(batch):
    """Language-model style: inputs and targets are views of one tensor, which is also
    in the batch twice; and a label tensor of its own."""
    seq = torch.stack([b[2] for b in batch])
    return {"seq": seq, "seq_again": seq, "inputs": seq[:, :-1], "targets": seq[:, 1:],
            "labels": torch.stack([b[1] for b in batch])}


def same_address_collate(batch):
    """Two tensors over two storages that start at one address (numpy memory seen
    twice): torch's workers send them as two storages."""
    a = np.arange(64, dtype=np.float32) + float(batch[0][1])
    return {"short": torch.from_numpy(a[:2]), "long": torch.from_numpy(a[:8]),
            "short_2": torch.from_numpy(a[:2])}


def scattered_views_collate(batch):
    """Views of one large storage: two overlapping, one far away."""
    big = torch.arange(100_000, dtype=torch.float32) + float(batch[0][1])
    return {"wide": big[0:1000], "inside": big[500:600], "far": big[99_000:99_010]}


def nested_collate(batch):
    return torch.nested.nested_tensor([b[2][: 1 + int(b[1]) % 3] for b in batch])


class Carrying(Dataset):
    """A dataset that carries data (a tensor, a numpy array) and counts, in the process
    that made it, how often it was pickled; its samples tell whether the worker's copy
    is the one get_worker_info() names and whether its tensor is shared, as torch
    shares the tensors of a dataset sent to a spawned worker."""

    pickled = 0

    def __init__(self, lock=None) -> None:
        self.table = torch.arange(40, dtype=torch.float32).view(20, 2)
        self.array = np.arange(20) * 3
        self.lock = lock

    def __getstate__(self):
        type(self).pickled += 1
        return self.__dict__

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int):
        if self.lock is not None:
            with self.lock:
                pass
        return {"row": self.table[i], "tripled": int(self.array[i]),
                "shared": self.table.is_shared(), "named": get_worker_info().dataset is self}

    def collate(self, batch):
        return torch.utils.data.default_collate(batch)


class Vocabulary:
    def __init__(self) -> None:
        self.words = ["a", "b"]


class WithVocabulary(Dataset):
    """A dataset and a collate_fn that share an object (a vocabulary), as a tokenizer is
    often shared: in a worker both must see the same one."""

    def __init__(self) -> None:
        self.vocab = Vocabulary()

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        self.vocab.words.append(f"w{i}")  # the collate_fn sees what __getitem__ added
        return i


class CollateWith:
    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def __call__(self, batch):
        return {"ids": torch.tensor(batch), "vocab": len(self.vocab.words)}


class WithPipe(Carrying):
    """A dataset holding a connection: multiprocessing passes its descriptor only to the
    process being started; plain pickle would send a number that means nothing there."""

    def __init__(self) -> None:
        super().__init__()
        import multiprocessing

        self.reader, self.writer = multiprocessing.Pipe(duplex=False)

    def __getitem__(self, i: int):
        out = super().__getitem__(i)
        out["pipe"] = os.fstat(self.writer.fileno()).st_ino == self.inode
        return out

    def __getstate__(self):
        state = super().__getstate__()
        state = dict(state, inode=os.fstat(self.writer.fileno()).st_ino)
        return state
