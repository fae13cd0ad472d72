"""Every private module and name of torch that ferry imports, in one place: the file to
adapt when a torch release moves them. tests/test_torch_compat.py fails where another
ferry module imports from a private torch module, or a private name from torch.

Each name keeps torch's own spelling, so that torch's source is one grep away. (The
private *attributes* of torch's loader and iterators that ferry's iterators read, such
as ``loader._auto_collation`` or ``self._sampler_iter``, are not listed here yet: they
go with the iterator redesign, which stops subclassing torch's iterators.)
"""

# ruff: noqa: F401  (this module re-exports)
from __future__ import annotations

# torch's worker loop wraps a sample's exception in it; ferry's workers substitute a
# subclass that also records which sample raised (_errors.SampleExceptionWrapper)
from torch._utils import ExceptionWrapper

# whether a torch profiler records now (torch labels each next() of its iterators for it)
from torch.autograd import _profiler_enabled

# python_exit_status: whether the interpreter is exiting (no worker shutdown then);
# signal_handling: the registry of worker pids that torch's SIGCHLD handler watches
from torch.utils.data import _utils

# how often torch's iterator polls its result queue while it checks its workers
from torch.utils.data._utils import MP_STATUS_CHECK_INTERVAL

# torch's worker module (ferry patches two names in it, in its worker processes only)
from torch.utils.data._utils import worker as worker_module

# torch's collate machinery, which ferry's ring collation extends with an out= arena
from torch.utils.data._utils.collate import collate, collate_tensor_fn, default_collate_fn_map

# torch's fetch of one batch from a map-style dataset (the Python fallback of ferry's
# native and thread producers fetches exactly as torch does)
from torch.utils.data._utils.fetch import _MapDatasetFetcher

# torch's recursive pinning of a batch (tensors, mappings, namedtuples, ...)
from torch.utils.data._utils.pin_memory import pin_memory

# the marker an IterableDataset's worker sends when its iterator is exhausted
from torch.utils.data._utils.worker import _IterableDatasetStopIteration

# torch's iterators, which ferry's iterators extend (their constructors keep torch's
# sampler, seeding and length semantics), and its dataset-kind switch
from torch.utils.data.dataloader import (
    _BaseDataLoaderIter,
    _DatasetKind,
    _MultiProcessingDataLoaderIter,
    _SingleProcessDataLoaderIter,
)


def python_exiting() -> bool:
    """Whether torch saw the interpreter start exiting (read now: torch sets it late)."""
    return _utils.python_exit_status is not False


def forget_worker_pids(key: int) -> None:
    """Stops torch's SIGCHLD handler from watching the workers registered under `key`."""
    _utils.signal_handling._remove_worker_pids(key)
