"""Bad input gets torch's own errors (type and message), promptly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, Subset, TensorDataset

import ferry


def error_of(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the point is to capture whatever torch raises
        return type(exc), str(exc)
    return None


def same_error(make, wrapped_by_torch_workers: bool = False, **kw):
    """Iterating ferry's loader raises what torch's raises. torch's worker processes
    wrap the message ("Caught IndexError in DataLoader worker process 1 ... Original
    Traceback ..."); ferry raises torch's error itself, from the main process, so there
    it has the same type and torch's original message."""
    expected = error_of(lambda: list(make(torch.utils.data.DataLoader, **kw)))
    got = error_of(lambda: list(make(ferry.DataLoader, **kw)))
    assert expected is not None, "the case should be an error in torch"
    assert got is not None, f"ferry raised nothing, torch raised {expected}"
    if wrapped_by_torch_workers:
        assert got[0] is expected[0]
        assert got[1].strip() and got[1].strip() in expected[1]
    else:
        assert got == expected


DS = TensorDataset(torch.arange(40).view(10, 4), torch.arange(10))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(
    "dataset, batches",
    [
        (DS, [[0, 1], [3, 10]]),
        (DS, [[-11]]),
        (Subset(DS, [0, 1, 2]), [[0, 3]]),
        (Subset(DS, [0, 1, 20]), [[2]]),
        (Subset(DS, [0, 1, 2]), [[-4]]),
        (ConcatDataset([DS, DS]), [[19, 20]]),
        (ConcatDataset([DS, DS]), [[-21]]),
        (ferry.ArrayDataset(np.zeros((5, 2))), [[5]]),
        (DS, [[0, 1.5]]),
        (DS, [torch.tensor([0, 3]), torch.tensor([10])]),
        (DS, [[]]),
    ],
)
def test_bad_indices_raise_torchs_error(dataset, batches, num_workers):
    def make(cls, **kw):
        return cls(dataset, batch_sampler=batches, num_workers=num_workers)

    same_error(make, wrapped_by_torch_workers=num_workers > 0)


def test_columns_of_different_lengths_raise_torchs_error():
    ds = TensorDataset(torch.arange(10), torch.arange(10))
    ds.tensors = (torch.arange(10), torch.arange(3))  # as torch allows after construction
    same_error(lambda cls, **kw: cls(ds, batch_size=4))


def test_good_batches_before_a_bad_one_are_delivered():
    loader = ferry.DataLoader(DS, batch_sampler=[[0], [1], [99], [2]])
    it = iter(loader)
    assert next(it)[1].tolist() == [0]
    assert next(it)[1].tolist() == [1]
    with pytest.raises(IndexError, match="out of bounds"):
        next(it)


@pytest.mark.parametrize(
    "kw",
    [
        {"num_workers": -1},
        {"timeout": -1},
        {"prefetch_factor": 2},
        {"persistent_workers": True},
        {"batch_sampler": [[0]], "batch_size": 2},
        {"batch_sampler": [[0]], "shuffle": True},
        {"sampler": [0, 1], "shuffle": True},
        {"batch_size": None, "drop_last": True},
        {"num_workers": 2, "prefetch_factor": -1},
        {"multiprocessing_context": "fork"},
    ],
)
def test_invalid_arguments_raise_torchs_error(kw):
    expected = error_of(lambda: torch.utils.data.DataLoader(DS, **kw))
    assert expected is not None and expected[0] is ValueError
    assert error_of(lambda: ferry.DataLoader(DS, **kw)) == expected


def test_timeout_without_workers_is_torchs_error():
    same_error(lambda cls: cls(DS, timeout=1))


def test_array_dataset_validates_its_arrays():
    with pytest.raises(ValueError, match="Size mismatch between arrays"):
        ferry.ArrayDataset(np.zeros((4, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="at least one array"):
        ferry.ArrayDataset()
    with pytest.raises(ValueError, match="0-dimensional"):
        ferry.ArrayDataset(np.float32(3))
    with pytest.raises(TypeError, match="no torch equivalent"):
        ferry.ArrayDataset(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="no torch equivalent"):
        ferry.ArrayDataset(np.zeros(3, dtype=">i4"))


def test_ragged_concat_falls_back_to_torch_and_keeps_its_errors():
    """Leaves with different row shapes don't fit one slot layout: torch's path decides,
    so a batch that mixes them fails as in torch and one that doesn't succeeds."""
    ds = ConcatDataset([TensorDataset(torch.zeros(3, 2)), TensorDataset(torch.zeros(3, 5))])
    same_error(lambda cls: cls(ds, batch_size=6))
    assert getattr(iter(ferry.DataLoader(ds)), "path", "torch") == "torch"
    assert [b[0].shape for b in ferry.DataLoader(ds, batch_size=3)] == [(3, 2), (3, 5)]
