"""Every private module and name of torch that ferry imports, in one place: the file to
adapt when a torch release moves them. tests/test_torch_compat.py fails where another
ferry module imports from a private torch module, or a private name from torch.

Each name keeps torch's own spelling, so that torch's source is one grep away. The
private attributes and methods of torch's loader and iterators that ferry reads, sets or
overrides (ferry's iterators extend torch's) are listed in TORCH_ATTRIBUTES, with why;
the test fails where ferry uses one not listed, and where one listed is gone from the
installed torch.
"""

# ruff: noqa: F401  (this module re-exports)
from __future__ import annotations

# torch's worker loop wraps a sample's exception in it; ferry's workers substitute a
# subclass that also records which sample raised (_errors.SampleExceptionWrapper)
from torch._utils import ExceptionWrapper

# whether a torch profiler records now (torch labels each next() of its iterators for it)
from torch.autograd import _profiler_enabled

# python_exit_status: whether the interpreter is exiting (no worker shutdown then)
from torch.utils.data import _utils

# torch's worker module (ferry patches two names in it, in its worker processes only)
from torch.utils.data._utils import worker as worker_module

# torch's collate machinery, which ferry's ring collation extends with an out= arena
from torch.utils.data._utils.collate import collate, collate_tensor_fn, default_collate_fn_map

# torch's fetch of one batch from a map-style dataset (the Python fallback of ferry's
# native and thread producers fetches exactly as torch does)
from torch.utils.data._utils.fetch import _MapDatasetFetcher

# torch's recursive pinning of a batch (tensors, mappings, namedtuples, ...)
from torch.utils.data._utils.pin_memory import pin_memory

# torch's worker loop, which ferry's worker processes run (with torch's arguments, in
# torch's order); the marker a worker sends when its IterableDataset is exhausted; the
# message that begins a persistent worker's new epoch (and its acknowledgement)
from torch.utils.data._utils.worker import (
    _IterableDatasetStopIteration,
    _ResumeIteration,
    _worker_loop,
)

# torch's iterators, which ferry's iterators extend (their constructors keep torch's
# sampler, seeding and length semantics), its dataset-kind switch, and the worker_init_fn
# wrapper that shards a DataPipe in each worker
from torch.utils.data.dataloader import (
    _BaseDataLoaderIter,
    _DatasetKind,
    _sharding_worker_init_fn,
    _SingleProcessDataLoaderIter,
)


def python_exiting() -> bool:
    """Whether torch saw the interpreter start exiting (read now: torch sets it late)."""
    return _utils.python_exit_status is not False


# The private attributes and methods of torch's DataLoader and its iterators that ferry
# reads, sets or overrides, and why.
TORCH_ATTRIBUTES: dict[str, str] = {
    # the loader's
    "_auto_collation": "whether batches are collated (the paths' conditions, the fetchers)",
    "_dataset_kind": "map-style or iterable (which paths and resume rules apply)",
    "_index_sampler": "the sampler the iterators draw from (stock ones are drawn as tensors)",
    "_iterator": "the persistent iterator, which load_state_dict stops",
    "_get_iterator": "overridden: ferry's DataLoader makes ferry's iterators",
    # every iterator's (_BaseDataLoaderIter), which ferry's iterators extend
    "_dataset": "the dataset the producers and resume read",
    "_collate_fn": "the collate_fn the producers' fetchers run",
    "_drop_last": "given to the producers' fetchers, as torch's fetchers get it",
    "_num_workers": "with or without workers: how far ahead indices are drawn",
    "_pin_memory": "pin_memory, and whether an accelerator can pin",
    "_pin_memory_device": "torch's pin_memory() argument",
    "_timeout": "the timeout of torch's timeout sentence",
    "_persistent_workers": "whether an epoch's end stops the producer",
    "_in_order": "set by ferry's iterators (without workers always in order)",
    "_sampler_iter": "the epoch's index iterator: resume follows it, stock samplers replace it",
    "_num_yielded": "counted by ferry's next(), for torch's warning past an iterable's len()",
    "_IterableDataset_len_called": "the len() an IterableDataset reported, for that warning",
    "_profile_name": "the label of each next() under a profiler, torch's",
    "_base_seed": "a property in ferry's iterators: a resumed one takes the original's seed",
    "_next_index": "overridden: resume counts every draw",
    "_next_data": "implemented by the producers' iterator; called by ferry's next()",
    "_reset": "overridden: a persistent iterator's new epoch (statistics, producers)",
    "_shared_seed": "a DataPipe's seed shared by the workers, sent to them as torch sends it",
    "_world_size": "with _rank, torch's sharding of a DataPipe in each worker",
    "_rank": "with _world_size, torch's sharding of a DataPipe in each worker",
    # the single-process iterator's
    "_dataset_fetcher": "holds the IterableDataset's iterator, whose state resume keeps",
}
