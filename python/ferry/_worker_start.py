"""What worker processes start with: WorkerInit, the worker_init_fn they run (stack
dumps on STACK_SIGNAL, torch's error and end-of-data markers replaced by ferry's, the
dataset's stream put where a resumed loader left it), and the dataset shipped once to
workers that are not forked (ship_dataset)."""

from __future__ import annotations

import faulthandler
import io
import mmap
import multiprocessing
import os
import pickle
import signal
import types
from functools import partial
from multiprocessing.reduction import ForkingPickler as _ForkingPickler
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from . import _ring_collate
from ._errors import SampleExceptionWrapper
from ._resume import WorkerStream
from ._ring_collate import EndedWithState, TensorsByReference, TensorsFromList
from ._torch_compat import worker_module

# The signal on which a worker dumps its Python stacks for the watchdog.
STACK_SIGNAL = signal.SIGUSR1


class WorkerInit:
    """The worker_init_fn the workers run: makes the worker dump its Python stacks into a
    file of the main process's on SIGUSR1 (for the watchdog), runs the loader's, then, in
    a resumed loader, puts the worker where the original one was (its generators, its
    dataset's stream)."""

    def __init__(self, init_fn: Any, stack_fds: list[int], resume: list[Any] | None) -> None:
        self.init_fn = init_fn
        self.stack_fds = stack_fds
        self.resume = resume

    def __reduce__(self) -> Any:
        from multiprocessing import reduction

        fds = [reduction.DupFd(fd) for fd in self.stack_fds]
        return (_rebuild_worker_init, (self.init_fn, fds, self.resume))

    def __call__(self, worker_id: int) -> None:
        faulthandler.register(STACK_SIGNAL, file=self.stack_fds[worker_id], all_threads=True)

        dataset = get_worker_info().dataset
        # this process only: torch's worker loop wraps a fetch's error in the wrapper
        # its module names, which then also records the sample that raised
        worker_module.ExceptionWrapper = SampleExceptionWrapper
        if isinstance(dataset, IterableDataset):
            worker_module._IterableDatasetStopIteration = EndedWithState  # this process only
        stream = _ring_collate.worker_stream = WorkerStream(dataset)
        if self.init_fn is not None:
            self.init_fn(worker_id)
        if self.resume is not None:
            stream.resume(self.resume[worker_id])


def _rebuild_worker_init(init_fn: Any, dupfds: list[Any], resume: list[Any] | None) -> WorkerInit:
    return WorkerInit(init_fn, [d.detach() for d in dupfds], resume)


# Types multiprocessing's pickler reduces its own way but plain pickle just as well.
_PLAIN_TYPES = (partial, types.MethodType, type(str.join))


class _SetAside(TensorsByReference):
    """Pickles everything but what multiprocessing's pickler sends its own way to the
    process being started (tensors and storages shared through shared memory,
    connections and sockets with their descriptors), which it collects instead."""

    def persistent_id(self, obj: Any) -> int | None:
        if isinstance(obj, (torch.Tensor, torch.UntypedStorage, torch.TypedStorage)) or (
            type(obj) in _ForkingPickler._extra_reducers and type(obj) not in _PLAIN_TYPES
        ):
            return self._set_aside(obj)
        return None


class _SharesWith(pickle.Pickler):
    """Pickles into nothing, to find whether an object reaches one that a pickled dataset
    holds (`memo`): in a worker the two must stay one object."""

    _ATOMS = (str, bytes, int, float, complex, bool, type(None), tuple, frozenset, type,
              types.FunctionType, types.BuiltinFunctionType, types.ModuleType)

    def __init__(self, memo: Any) -> None:
        super().__init__(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
        self.dataset_objects = memo
        self.shares = False

    def persistent_id(self, obj: Any) -> int | None:
        if id(obj) in self.dataset_objects and not isinstance(obj, self._ATOMS):
            self.shares = True
            return 0
        return None


class _ShippedDataset:
    """The dataset as workers started by spawn or forkserver receive it. torch pickles it
    into each worker's start-up pipe in turn, and a dataset larger than the pipe makes
    each start wait until that worker has imported torch and read it. Here it is pickled
    once, into a memfd each worker reads itself, so the workers start side by side; what
    it holds that multiprocessing sends its own way (tensors, shared as torch shares
    them; connections) still travels with each worker's arguments.
    Only what plain pickle takes whole goes this way (see ship_dataset)."""

    def __init__(self, fd: int, aside: list[Any]) -> None:
        self.fd = fd
        self.aside = aside

    def __reduce__(self) -> Any:
        from multiprocessing import reduction

        return (_unship_dataset, (reduction.DupFd(self.fd), self.aside))

    def close(self) -> None:
        os.close(self.fd)


def _unship_dataset(dupfd: Any, aside: list[Any]) -> Any:
    fd = dupfd.detach()
    try:
        with mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ) as pickled:
            return TensorsFromList(pickled, aside).load()
    finally:
        os.close(fd)


def ship_dataset(loader: Any) -> _ShippedDataset | None:
    """The dataset pickled once for workers that are not forked, or None to let torch
    pickle it for each worker: with fork (nothing is pickled), for datapipes (torch's
    iterator changes them first), when the collate_fn or worker_init_fn reaches an object
    the dataset holds (torch pickles them together, so in a worker they stay one
    object), and when plain pickle cannot take it (a lock, which multiprocessing only
    passes to the process being started).
    """
    from torch.utils.data.datapipes.datapipe import IterDataPipe, MapDataPipe

    dataset = loader.dataset
    context = loader.multiprocessing_context or multiprocessing.get_context()
    if context.get_start_method() == "fork" or isinstance(dataset, (IterDataPipe, MapDataPipe)):
        return None
    fd = os.memfd_create("ferry-dataset")
    try:
        with open(fd, "wb", closefd=False) as f:
            pickler = _SetAside(f)
            pickler.dump(dataset)
        finder = _SharesWith(pickler.memo.copy())
        finder.dump((loader.collate_fn, loader.worker_init_fn))
        if finder.shares:
            os.close(fd)
            return None
    except BaseException as e:
        os.close(fd)
        if isinstance(e, Exception):
            return None  # torch's own pickling raises the error, if any
        raise
    return _ShippedDataset(fd, pickler.tensors)
