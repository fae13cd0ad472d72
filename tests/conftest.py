"""Shared fixtures: the CUDA marker, random state restored around each test, and helpers
that compare batches from ferry with torch's bit for bit."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pytest
import torch

FAIL_WITHOUT_CUDA = os.environ.get("FERRY_FAIL_WITHOUT_CUDA") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    for item in items:
        if "needs_cuda" in item.keywords:
            if FAIL_WITHOUT_CUDA:
                item.add_marker(pytest.mark.xfail(reason="no CUDA", run=False, strict=True))
            else:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


def pytest_sessionstart(session: pytest.Session) -> None:
    if FAIL_WITHOUT_CUDA and not torch.cuda.is_available():
        raise pytest.UsageError("FERRY_FAIL_WITHOUT_CUDA=1 but torch sees no CUDA device")


@pytest.fixture(autouse=True)
def _restore_random_state():
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)
    random.setstate(py_state)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaNs included)."""
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    if a.numel() == 0:  # no bytes (and an empty tensor may keep a stride that no view takes)
        return True
    a8 = a.detach().cpu().contiguous().flatten().view(torch.uint8)
    b8 = b.detach().cpu().contiguous().flatten().view(torch.uint8)
    return torch.equal(a8, b8)


def assert_same_batch(expected: Any, got: Any, where: str = "batch") -> None:
    """`got` has `expected`'s structure (container types included) and bit-equal leaves."""
    assert type(got) is type(expected), f"{where}: {type(got)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert same_bits(expected, got), f"{where}: tensors differ\n{expected}\n{got}"
    elif isinstance(expected, dict):
        assert list(got) == list(expected), f"{where}: keys differ"
        for k in expected:
            assert_same_batch(expected[k], got[k], f"{where}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), f"{where}: lengths differ"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            assert_same_batch(e, g, f"{where}[{i}]")
    else:
        assert got == expected, f"{where}: {got!r} != {expected!r}"


def assert_same_batches(expected: list[Any], got: list[Any]) -> None:
    assert len(got) == len(expected), f"{len(got)} batches, torch gave {len(expected)}"
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert_same_batch(e, g, f"batch {i}")
