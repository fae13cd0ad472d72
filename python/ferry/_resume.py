"""Exact resume: what ``DataLoader.state_dict()`` records and how a fresh loader given it
(``load_state_dict``) yields the batches the original would have yielded next.

What decides a loader's batches, and how each is kept:

* the sampler's indices: the states of the torch generators it draws from (the
  loader's ``generator``, the sampler's own, torch's global one), saved just before the
  epoch's first draw. On resume they are put back and the indices already yielded are
  drawn and skipped without fetching anything; torch's, ``random``'s and numpy's global
  generators are lent to the sampler only while it draws, and only where they differ
  from the state's (the training loop's own random state is left as it is);
* the workers' seeds (the base seed), kept as a number and not drawn again. A state
  taken where the next ``iter()`` begins an epoch (before the first, or after one ended)
  holds the seed that ``iter()`` draws, and the generators as the epoch's first draw
  finds them: the next epoch is pinned by the state, not by the new process's generators;
* what a worker's ``__getitem__`` draws from its random generators (torch, ``random``,
  numpy): each worker reports its generators' states after every batch that changed
  them, and the states after each worker's last yielded batch are restored in fresh
  workers, before they fetch anything;
* a dataset's own position (its *stream*), as torchdata's StatefulDataLoader keeps it:
  the dataset's ``state_dict()``, loaded before ``iter()``, and its iterator's, loaded
  after ``iter()`` made it (a dataset that is its own iterator has only the latter),
  copied when taken; per worker, and in the main process without workers. An
  IterableDataset without either is replayed from the start of the epoch: its skipped
  batches are read again and dropped;
* which batches were yielded: a count, plus the positions yielded out of order
  (``in_order=False``).

The state is a snapshot, taken between batches: batches prefetched but not yet yielded
are fetched again after resume (none lost or repeated). An iterator that goes (a loop
left with ``break``) leaves its last snapshot on its loader. The state is plain data
(numbers, lists, dicts, byte tensors) and read-only to ferry: it survives ``torch.save`` /
``torch.load(weights_only=True)`` and may be loaded any number of times. A checksum and a
fingerprint of the loader's configuration reject a corrupted state or one from another
loader with a ValueError.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import random
import struct
import sys
import traceback
import weakref
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, IterableDataset

from ._torch_compat import _DatasetKind

VERSION = 2  # 2: streams, states between epochs pin the next one


# --- random generators --------------------------------------------------------------
def sampler_generators(loader: Any) -> list[torch.Generator]:
    """The generators the loader's sampler draws from, besides torch's global one."""
    found: list[torch.Generator] = []
    candidates = [loader.generator, loader._index_sampler]
    if isinstance(loader._index_sampler, BatchSampler):
        candidates.append(loader._index_sampler.sampler)
    # a batch_sampler of another class over a sampler, and the loader's own sampler
    candidates += [getattr(loader._index_sampler, "sampler", None), loader.sampler]
    for c in candidates:
        g = c if isinstance(c, torch.Generator) else getattr(c, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def rng_blob() -> bytes:
    """This process's generators now, in RngWatcher's format."""
    return _blob(torch.get_rng_state(), random.getstate(), np.random.get_state())


def _blob(torch_state: torch.Tensor, random_state: Any, numpy_state: Any) -> bytes:
    return pickle.dumps(
        (torch_state.numpy().tobytes(), random_state, numpy_state), pickle.HIGHEST_PROTOCOL
    )


def _plain_python_numpy(random_state: Any, numpy_state: Any) -> dict[str, Any]:
    """`random`'s and numpy's global generator states as plain data."""
    version, internal, gauss = random_state
    name, keys, pos, has_gauss, cached = numpy_state
    return {
        "random": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _main_rng_now() -> dict[str, Any]:
    """torch's, random's and numpy's global generators now, as plain data."""
    return {"global": torch.get_rng_state(),
            **_plain_python_numpy(random.getstate(), np.random.get_state())}


def _set_main_rng(rng: dict[str, Any]) -> None:
    """Sets those of torch's ("global"), random's and numpy's generators `rng` names."""
    if "global" in rng:
        torch.set_rng_state(rng["global"])
    if "random" in rng:
        version, internal, gauss = rng["random"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def main_rng(generators: list[torch.Generator]) -> dict[str, Any]:
    """The generators a sampler may draw from, now: `generators` and the global ones."""
    return {**_main_rng_now(), "generators": [g.get_state() for g in generators]}


def borrow_main_rng(rng: dict[str, Any]) -> dict[str, Any]:
    """Sets the global generators that differ from `rng`'s to `rng`'s, and returns what
    they were, for `give_back`. One that is equal is left to move as torch would move it:
    a training loop that put its generators back as they were at the snapshot gets them
    back as the uninterrupted run has them."""
    taken = {
        k: v
        for k, v in _main_rng_now().items()
        if rng.get(k) is not None and not _equal_states(v, rng[k])
    }
    _set_main_rng({k: rng[k] for k in taken})
    return taken


def give_back(taken: dict[str, Any]) -> None:
    _set_main_rng(taken)


def _equal_states(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def draw_base_seed(generator: torch.Generator | None) -> int:
    """The workers' base seed, drawn as torch's iterator draws it."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def restore_worker_rng(state: dict[str, Any]) -> None:
    _set_main_rng({"global": state["torch"], "random": state["random"], "numpy": state["numpy"]})


class RngWatcher:
    """In a worker: its generators' states after a batch, as one pickled blob (cheap to
    send: no tensor, no per-batch work in the main process until a state_dict() asks
    for it), or None when no generator moved since the last report (a dataset without
    randomness costs a comparison)."""

    def __init__(self) -> None:
        self._last: tuple[Any, Any, Any] | None = None

    def changed(self) -> bytes | None:
        now = (torch.get_rng_state(), random.getstate(), np.random.get_state())
        last = self._last
        if (
            last is not None
            and torch.equal(now[0], last[0])
            and now[1] == last[1]
            and now[2][2] == last[2][2]
            and np.array_equal(now[2][1], last[2][1])
        ):
            return None
        self._last = now
        return _blob(*now)


def plain_worker_rng(rng: bytes | dict[str, Any]) -> dict[str, Any]:
    """A worker's generator states as plain data (from an RngWatcher's blob)."""
    if not isinstance(rng, bytes):
        return rng
    torch_state, random_state, numpy_state = pickle.loads(rng)
    return {
        "torch": torch.frombuffer(bytearray(torch_state), dtype=torch.uint8),
        **_plain_python_numpy(random_state, numpy_state),
    }


def plain_worker_states(states: list[Any] | None) -> list[Any] | None:
    """Per worker {"rng": ..., "stream": ...} as plain data (workers send both pickled)."""
    if states is None:
        return None
    plain = []
    for s in states:
        if s:
            s = dict(s)
            if s.get("rng") is not None:
                s["rng"] = plain_worker_rng(s["rng"])
            if isinstance(s.get("stream"), bytes):
                s["stream"] = pickle.loads(s["stream"])
        plain.append(s)
    return plain


# --- a dataset's own position ---------------------------------------------------------
def has_state(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def stream_state(dataset: Any, iterator: Any = None, ended: bool = False) -> dict | None:
    """Where `dataset` (and `iterator`, the one iter() made of it) stand, as torchdata's
    StatefulDataLoader keeps them: the dataset's state_dict() and the iterator's, when
    they have one (a dataset that is its own iterator: only the iterator's); `ended`: the
    iterator ran out (torch's fetcher said so). None when neither has a state. Not a copy:
    the caller copies it at once (the user's state_dict() may return what it updates)."""
    iterator_state = iterator.state_dict() if has_state(iterator) else None
    own = has_state(dataset) and iterator is not dataset
    if not own and iterator_state is None:
        return None
    return {
        "dataset": dataset.state_dict() if own else None,
        "iterator": iterator_state,
        "ended": bool(ended),
    }


def restore_before_iter(dataset: Any, stream: dict | None, over: bool) -> None:
    """The dataset's own state, before iter(). `over`: the stream's iterator had run out
    and the resumed run begins a new one; its state goes into an iterator made for it,
    which leaves a dataset that is its own iterator as the original left it (as
    StatefulDataLoader loads a finished iterator, then starts the next epoch)."""
    if stream is None:
        return
    if stream["dataset"] is not None:
        dataset.load_state_dict(copy.deepcopy(stream["dataset"]))
    if over and stream["iterator"] is not None:
        iter(dataset).load_state_dict(copy.deepcopy(stream["iterator"]))


def restore_after_iter(fetcher: Any, stream: dict | None, over: bool) -> None:
    """The iterator's state, once iter() made it (torch's fetcher holds it)."""
    if stream is None or over:
        return
    if stream["iterator"] is not None:
        fetcher.dataset_iter.load_state_dict(copy.deepcopy(stream["iterator"]))
    fetcher.ended = stream["ended"]


class WorkerStream:
    """In a worker process: its dataset's stream, restored when the worker starts and
    reported (pickled at once) with each batch. For an IterableDataset, torch's
    create_fetcher (in this process only) also puts the iterator's state back once iter()
    made it, and keeps the fetcher, whose iterator reports its state."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.fetcher: Any = None
        self._pending: dict | None = None
        self._over = False
        if isinstance(dataset, IterableDataset):
            create = _DatasetKind.create_fetcher

            def create_fetcher(kind: Any, ds: Any, *args: Any) -> Any:
                fetcher = create(kind, ds, *args)
                if ds is self.dataset:  # (not a loader of the worker's own)
                    pending, self._pending = self._pending, None
                    restore_after_iter(fetcher, pending, self._over)
                    self.fetcher = fetcher
                return fetcher

            _DatasetKind.create_fetcher = staticmethod(create_fetcher)

    def resume(self, state: dict[str, Any] | None) -> None:
        """After the worker's seeding and worker_init_fn: continue where the original
        worker was after its last yielded batch (`over`: its iterator had run out before
        the epoch the resumed iterator begins)."""
        if not state:
            return
        if state.get("rng") is not None:
            restore_worker_rng(state["rng"])
        self._pending, self._over = state.get("stream"), bool(state.get("over"))
        restore_before_iter(self.dataset, self._pending, self._over)

    def report(self, ended: bool = False) -> bytes | None:
        fetcher = self.fetcher
        iterator = getattr(fetcher, "dataset_iter", None)
        stream = stream_state(self.dataset, iterator, ended or getattr(fetcher, "ended", False))
        return pickle.dumps(stream, pickle.HIGHEST_PROTOCOL) if stream is not None else None


def worker_resumes(states: list[Any] | None, idle: set[int]) -> list[Any] | None:
    """What each fresh worker restores (see WorkerStream.resume): a worker whose stream
    ended, and which the resumed epoch asks for batches (not `idle`: it had not run out
    in that epoch), had ended a previous epoch's iterator."""
    if states is None:
        return None
    return [
        {**s, "over": bool(s.get("stream") and s["stream"]["ended"]) and wid not in idle}
        if s else s
        for wid, s in enumerate(states)
    ]


# --- one epoch's progress -----------------------------------------------------------
class Epoch:
    """The sampler stream of one epoch, as a resumable iterator sees it.

    Positions count the sampler's draws from the epoch's start (in the original run). A
    resumed epoch skips the positions already yielded; `handed[k]` is the position of
    the k-th index handed to the iterator in this run. An IterableDataset's stream has
    no positions: only a count of batches yielded.
    """

    def __init__(self, sampler_iter: Any, rng: dict[str, Any], positional: bool,
                 workers_at_start: list[Any] | None, skip: dict[str, Any] | None = None) -> None:
        self.sampler_iter = sampler_iter
        self.rng = rng  # generator states before the epoch's first draw
        self.positional = positional
        self.workers_at_start = workers_at_start
        self.done = 0  # positions [0, done) were yielded
        self.extra: set[int] = set()  # and these, out of order
        self.yielded = 0  # batches yielded in this run of the epoch
        self.finished = False
        self._skip_extra: set[int] = set()
        self._next_pos = 0
        self._handed: dict[int, int] = {}  # task -> position, until it is yielded
        self._tasks = 0
        if skip is not None and positional:
            self.done = self._next_pos = skip["yielded"]
            self.extra = set(skip["extra"])
            self._skip_extra = set(self.extra)

    def draw(self, next_index: Any) -> Any:
        """The next index to fetch, skipping the positions already yielded."""
        while True:
            index = next_index()
            pos = self._next_pos
            self._next_pos += 1
            if pos not in self._skip_extra:
                if self.positional:
                    self._handed[self._tasks] = pos
                    self._tasks += 1
                return index

    def drawn_position(self) -> int:
        """The position of the index `draw` returned last (torch sends a map-style
        epoch's k-th batch to worker k % num_workers)."""
        return self._next_pos - 1

    def skip_to_start(self, next_index: Any) -> Any:
        """Draws (and drops) the indices of the positions already yielded, then returns
        the first index to fetch."""
        for _ in range(self._next_pos):
            next_index()
        return self.draw(next_index)

    def note_yielded(self, task: int | None) -> None:
        k = task if task is not None else self.yielded
        self.yielded += 1
        if not self.positional:
            self.done += 1
            return
        pos = self._handed.pop(k)
        if pos == self.done:
            self.done += 1
            while self.done in self.extra:
                self.extra.remove(self.done)
                self.done += 1
        else:
            self.extra.add(pos)

    def snapshot(self) -> dict[str, Any]:
        return {"rng": self.rng, "yielded": self.done, "extra": sorted(self.extra)}


class Resumable:
    """Mixed into ferry's iterators (first in the MRO): tracks the epoch's progress and
    the workers' states for `state_dict`, and applies a pending resume.

    Each iterator calls `_init_resume(loader)` before torch's constructor, and sets
    `self._yielded_task` (which task of this epoch, counting from 0, it is handing over)
    when it hands batches over out of order. Its loader sets `_resume_token` once it is
    made: the loader's latest iterator leaves its last snapshot on the loader when it goes.
    """

    _resume: dict[str, Any] | None = None
    _epoch: Epoch | None = None
    _yielded_task: int | None = None
    _replay_left = 0
    _tracked_generators: list[torch.Generator] = []
    # per worker: {"rng": ..., "stream": ...} after its last batch handed over (None:
    # as seeded); None without worker processes
    _worker_states: list[Any] | None = None
    _owner: Any = None  # a weak reference to the loader
    _resume_token: object | None = None

    def _init_resume(self, loader: Any) -> None:
        self._resume = loader._take_resume()
        self._tracked_generators = sampler_generators(loader)
        self._loader_generator = loader.generator
        self._owner = weakref.ref(loader)

    # The workers' seed: torch draws it in its constructor; a resumed iterator takes the
    # original's. Where the original drew it before the state was taken, the generator
    # the draw came from is put back; where the original's next iter() draws it (a state
    # between epochs), the generator moves as torch's would.
    @property
    def _base_seed(self) -> int:
        return self.__dict__["_ferry_base_seed"]

    @_base_seed.setter
    def _base_seed(self, drawn: int) -> None:
        resume = self._resume
        if resume is not None and resume.get("base_seed") is not None:
            drawn = resume["base_seed"]
            pre = resume["rng_before_iter"]
            undo = not resume.get("draws_seed")
            if undo and self._loader_generator is not None:
                self._loader_generator.set_state(pre["loader"])
            elif undo:
                torch.set_rng_state(pre["global"])
        self.__dict__["_ferry_base_seed"] = drawn

    def _current_rng(self) -> dict[str, Any]:
        return main_rng(self._tracked_generators)

    def _next_index(self) -> Any:
        epoch = self._epoch
        if epoch is None or epoch.sampler_iter is not self._sampler_iter:
            return self._start_epoch()
        return epoch.draw(super()._next_index)  # type: ignore[misc]

    def _start_epoch(self) -> Any:
        resume, self._resume = self._resume, None
        skip = resume.get("epoch") if resume is not None else None
        positional = self._dataset_kind == _DatasetKind.Map
        workers = list(self._worker_states) if self._worker_states is not None else None
        if skip is None or skip.get("replay"):
            if skip is not None and self._num_workers == 0 and skip["yielded"] > 0:
                # read again in this process: with its generators as at the epoch's start,
                # then the training loop's given back (in __next__)
                self._replay_user_rng = borrow_main_rng(skip["rng"])
            self._epoch = Epoch(self._sampler_iter, self._current_rng(), positional, workers)
            if skip is not None:  # an IterableDataset without a state: read again
                self._replay_left = skip["yielded"]
            return self._epoch.draw(super()._next_index)  # type: ignore[misc]
        self._epoch = epoch = Epoch(self._sampler_iter, skip["rng"], positional, workers, skip)
        # The generators as they were before the original epoch's first draw; the global
        # ones only while the sampler draws.
        for g, s in zip(self._tracked_generators, skip["rng"]["generators"], strict=True):
            g.set_state(s)
        taken = borrow_main_rng(skip["rng"])
        try:
            first = epoch.skip_to_start(super()._next_index)  # type: ignore[misc]
        finally:
            give_back(taken)
        self._num_yielded = skip["yielded"] + len(skip["extra"])
        if not positional:
            epoch.done = skip["yielded"]
        return first

    def __next__(self) -> Any:
        while True:
            try:
                data = super().__next__()  # type: ignore[misc]
            except StopIteration:
                if self._epoch is not None:
                    self._epoch.finished = True
                self._replay_done()
                self._epoch_over()
                raise
            task, self._yielded_task = self._yielded_task, None
            if self._epoch is not None:
                self._epoch.note_yielded(task)
            if self._replay_left == 0:
                return data
            self._replay_left -= 1  # replayed, already yielded before the snapshot
            if self._replay_left == 0:
                self._replay_done()

    _replay_user_rng: dict[str, Any] | None = None

    def _replay_done(self) -> None:
        user, self._replay_user_rng = self._replay_user_rng, None
        if user is not None:
            give_back(user)

    def _epoch_over(self) -> None:
        """Every batch of the epoch was handed over (for subclasses)."""

    def _stream_has_state(self) -> bool:
        """Whether the dataset keeps its position (else an IterableDataset is replayed)."""
        return has_state(self._dataset)

    def snapshot(self) -> dict[str, Any]:
        """`resume_snapshot`, copied: nothing in it changes with the iterator or the
        dataset afterwards."""
        return copy.deepcopy(self.resume_snapshot())

    def resume_snapshot(self) -> dict[str, Any]:
        """This iterator's part of the loader's state_dict: its workers' seed and states,
        and the epoch's progress (None once the epoch is over)."""
        if self._resume is not None:  # loaded, and not drawn from yet: as loaded
            pending = {k: v for k, v in self._resume.items() if k != "rng_before_iter"}
            pending["draws_seed"] = False  # this iterator drew it
            pending["workers"] = plain_worker_states(pending.get("workers"))
            return pending
        epoch = self._epoch
        state: dict[str, Any] = {
            "base_seed": self._base_seed,
            "workers": self._worker_states,
            "epoch": None,
        }
        if epoch is None or epoch.sampler_iter is not self._sampler_iter:
            # made (its seed drawn) but not drawn from yet: its draws are still to come,
            # from the generators as they are now
            state["epoch"] = {"rng": self._current_rng(), "yielded": 0, "extra": []}
        elif not epoch.finished:
            state["epoch"] = epoch.snapshot()
            state["epoch"]["yielded"] += self._replay_left  # still to be replayed
            if not epoch.positional and not self._stream_has_state():
                # replayed from the epoch's start, by workers as they were then
                state["epoch"]["replay"] = True
                state["workers"] = epoch.workers_at_start
        state["workers"] = plain_worker_states(state["workers"])
        return state

    def __del__(self) -> None:
        try:
            self._leave_snapshot()
        finally:
            parent = getattr(super(), "__del__", None)
            if parent is not None:
                parent()

    def _leave_snapshot(self) -> None:
        """The loader's latest iterator, going (a loop left with `break`, an epoch over):
        leaves where it stopped on the loader, for its state_dict(). Its workers and
        threads go with it; the loader keeps plain data."""
        if sys.is_finalizing():  # the interpreter is going: nobody asks for a state
            return
        loader = self._owner() if self._owner is not None else None
        if loader is None or self._resume_token is None:
            return
        if loader._resume_token is not self._resume_token:
            return  # an older iterator
        try:
            loader._left_snapshot = self.snapshot()
        except Exception as exc:  # said by the loader's state_dict(), if it is asked
            # its frames would keep this iterator (and its workers) alive: their lines only
            where = "".join(traceback.format_tb(exc.__traceback__))
            exc.add_note(f"(raised as the loader's last iterator went, at:\n{where})")
            loader._left_snapshot = exc.with_traceback(None)


def between_epochs(loader: Any, last: dict[str, Any] | None) -> dict[str, Any]:
    """The iterator part of a state taken where the loader's next iter() begins an epoch:
    before its first, or after one ended (`last`: the last iterator's snapshot). The seed
    that iter() draws is drawn here as it will be drawn, and the generators put back, so
    the state pins the next epoch: its seed, and the generators as its first sampler draw
    finds them. Persistent workers keep their seed and their states."""
    keeps_workers = last is not None and loader.persistent_workers and loader.num_workers > 0
    generators = sampler_generators(loader)
    before = torch.get_rng_state(), [g.get_state() for g in generators]
    try:
        seed = last["base_seed"] if keeps_workers else draw_base_seed(loader.generator)
        rng = main_rng(generators)
    finally:
        torch.set_rng_state(before[0])
        for g, s in zip(generators, before[1], strict=True):
            g.set_state(s)
    return {
        "base_seed": seed,
        "draws_seed": not keeps_workers,
        "workers": last["workers"] if keeps_workers else None,
        # without workers: the dataset and its last iterator, as that iterator ended
        "stream": last.get("stream") if last is not None else None,
        "between_epochs": True,
        "epoch": {"rng": rng, "yielded": 0, "extra": []},
    }


# --- the state's integrity ------------------------------------------------------------
def fingerprint(loader: Any) -> dict[str, Any]:
    """What a state must agree on with the loader that loads it."""
    ds = loader.dataset
    kind = "map" if loader._dataset_kind == _DatasetKind.Map else "iterable"
    try:
        length = len(ds)
    except TypeError:
        length = None
    batch_sampler = loader.batch_sampler
    s = getattr(batch_sampler, "sampler", loader.sampler)
    return {
        "dataset": type(ds).__qualname__,
        "dataset_kind": kind,
        "dataset_length": length,
        "sampler": type(loader.sampler).__qualname__,
        "batch_sampler": type(batch_sampler).__qualname__ if batch_sampler is not None else None,
        "batch_size": loader.batch_size,
        "drop_last": loader.drop_last,
        "num_workers": loader.num_workers,
        "worker_type": loader.worker_type,
        "persistent_workers": loader.persistent_workers,
        "in_order": loader.in_order,
        # a DistributedSampler's shard: rank 1's state must not resume rank 0
        "shard": [getattr(s, "rank", None), getattr(s, "num_replicas", None)],
    }


def _feed(h: Any, obj: Any) -> None:
    """A canonical encoding of plain data, for the checksum."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(type(obj).__name__.encode() + b":" + repr(obj).encode() + b";")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{list(t.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"{" + struct.pack("<q", len(obj)))
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" + struct.pack("<q", len(obj)))
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:  # a dataset's own state may hold other things
        h.update(b"R" + repr(obj).encode())


def checksum(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def validate(state: Any, loader: Any) -> None:
    """Raises ValueError saying what is wrong with `state` for `loader`."""
    if not isinstance(state, dict) or "ferry_state_version" not in state:
        raise ValueError("load_state_dict: not a ferry.DataLoader state_dict")
    version = state["ferry_state_version"]
    if version != VERSION:
        age = "an older" if isinstance(version, int) and version < VERSION else "another"
        raise ValueError(
            f"load_state_dict: the state has layout version {version!r}, written by {age} "
            f"ferry; this ferry reads version {VERSION} only (resume from a checkpoint "
            "written by this version, or start the epoch afresh without loading the state)"
        )
    if state.get("checksum") != checksum(state):
        raise ValueError("load_state_dict: the state is corrupted (its checksum does not match)")
    mine = fingerprint(loader)
    theirs = state.get("config", {})
    differ = [
        f"{k}: state has {theirs.get(k)!r}, this loader has {v!r}"
        for k, v in mine.items()
        if theirs.get(k) != v
    ]
    if differ:
        raise ValueError(
            "load_state_dict: the state comes from a loader configured differently; "
            + "; ".join(differ)
        )
    epoch = (state.get("iterator") or {}).get("epoch")
    if epoch is not None:
        total = _total_positions(loader)
        done, extra = epoch["yielded"], epoch["extra"]
        if total is not None and (done > total or any(not done < p < total for p in extra)):
            raise ValueError(
                f"load_state_dict: the state's yielded batches ({done}, {extra}) do not fit "
                f"an epoch of {total} batches"
            )


def _total_positions(loader: Any) -> int | None:
    if loader._dataset_kind != _DatasetKind.Map:
        return None
    try:
        return len(loader._index_sampler)
    except TypeError:
        return None
