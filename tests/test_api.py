"""ferry.DataLoader is torch's DataLoader: constructor, type, attributes, backend info."""

from __future__ import annotations

import inspect
import sys
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset

import ferry
from ferry import _ext


def test_constructor_is_torchs_plus_ferrys_keyword_arguments():
    ours = list(inspect.signature(ferry.DataLoader.__init__).parameters.values())
    theirs = list(inspect.signature(torch.utils.data.DataLoader.__init__).parameters.values())
    extra = [("device", None), ("worker_type", "process"), ("distributed", False),
             ("memory_budget", None)]
    assert [(p.name, p.kind, p.default) for p in ours[: -len(extra)]] == [
        (p.name, p.kind, p.default) for p in theirs
    ]
    assert [(p.name, p.kind, p.default) for p in ours[-len(extra):]] == [
        (name, inspect.Parameter.KEYWORD_ONLY, default) for name, default in extra
    ]


def test_is_a_torch_dataloader_and_generic():
    loader = ferry.DataLoader(TensorDataset(torch.arange(4)))
    assert isinstance(loader, torch.utils.data.DataLoader)
    alias = ferry.DataLoader[tuple[torch.Tensor, ...]]
    assert alias.__origin__ is ferry.DataLoader


def test_reinstantiate_from_attributes():
    """Lightning / Accelerate rebuild a loader from attributes named like the arguments."""
    ds = TensorDataset(torch.arange(10))
    loader = ferry.DataLoader(ds, batch_size=3, device="cpu", drop_last=True)
    params = inspect.signature(ferry.DataLoader.__init__).parameters
    kwargs = {
        name: getattr(loader, name)
        for name in params
        if name not in ("self", "shuffle", "sampler", "batch_sampler") and hasattr(loader, name)
    }
    clone = ferry.DataLoader(**kwargs)
    assert clone.device == torch.device("cpu")
    assert [b[0].tolist() for b in clone] == [b[0].tolist() for b in loader]


def test_torch_guards_still_apply():
    loader = ferry.DataLoader(TensorDataset(torch.arange(4)), batch_size=2)
    with pytest.raises(ValueError, match="batch_size attribute should not be set"):
        loader.batch_size = 3


def test_backend_info_reports_build_and_runtime():
    info = ferry.backend_info()
    assert info["built_with_torch"] == torch.__version__.split("+")[0]
    assert info["cuda_available"] == torch.cuda.is_available()
    assert isinstance(info["built_with_cuda_kernels"], bool)


def test_device_argument():
    ds = TensorDataset(torch.arange(4))
    assert ferry.DataLoader(ds).device is None
    assert ferry.DataLoader(ds, device="cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be"):
        ferry.DataLoader(ds, device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            ferry.DataLoader(ds, device="cuda")


def test_pin_memory_without_accelerator_warns_like_torch():
    if torch.accelerator.is_available():
        pytest.skip("an accelerator is present: pinning really happens")
    ds = TensorDataset(torch.arange(8))
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        expected = list(torch.utils.data.DataLoader(ds, batch_size=4, pin_memory=True))
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        got = list(ferry.DataLoader(ds, batch_size=4, pin_memory=True))
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert all(not b[0].is_pinned() for b in got)
    assert [b[0].tolist() for b in got] == [b[0].tolist() for b in expected]


def test_broken_extension_fails_at_first_use_with_a_rebuild_hint(monkeypatch):
    monkeypatch.setattr(_ext, "_module", None)
    monkeypatch.delattr(ferry, "_C", raising=False)
    monkeypatch.setitem(sys.modules, "ferry._C", None)  # makes `from . import _C` fail
    with pytest.raises(ImportError, match="could not be loaded.*Rebuild"):
        ferry.DataLoader(TensorDataset(torch.arange(4)))
    with pytest.raises(ImportError, match="Rebuild"):
        ferry.backend_info()
