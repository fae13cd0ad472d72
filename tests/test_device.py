"""device=: batches arrive on the named device with torch's values. The CUDA cases skip
without a GPU (FERRY_FAIL_WITHOUT_CUDA=1 turns the skips into failures)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

import ferry
from conftest import assert_same_batch

IMAGES = torch.randint(0, 256, (1000, 3, 8, 8), dtype=torch.uint8)
LABELS = torch.arange(1000)


class PyDataset(Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, i):
        return {"x": IMAGES[i].float(), "y": i}


def test_cpu_device_gives_cpu_batches():
    got = list(ferry.DataLoader(TensorDataset(IMAGES, LABELS), batch_size=64, device="cpu"))
    assert all(x.device.type == "cpu" for x, _ in got)


needs_cuda = pytest.mark.needs_cuda


@needs_cuda
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("dataset", [TensorDataset(IMAGES, LABELS), PyDataset()])
def test_cuda_batches_equal_torch_then_to(dataset, num_workers):
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    expected = [
        _to(b, "cuda")
        for b in torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, generator=g1)
    ]
    got = list(
        ferry.DataLoader(dataset, batch_size=32, shuffle=True, generator=g2,
                         num_workers=num_workers, device="cuda")
    )
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert_same_batch(e, g)


@needs_cuda
def test_cuda_batch_is_ready_on_the_consumer_stream():
    """A kernel reading a batch right after hand-over, with no explicit synchronize, sees
    the right data, over many batches and a ring smaller than the epoch."""
    ds = TensorDataset(IMAGES, LABELS)
    loader = ferry.DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, device="cuda")
    sums = []
    for x, y in loader:
        sums.append((x.sum(dtype=torch.int64), y))
    for s, y in sums:
        assert s.item() == IMAGES[y.cpu()].sum(dtype=torch.int64).item()


@needs_cuda
def test_pin_memory_gives_pinned_batches():
    got = list(ferry.DataLoader(TensorDataset(IMAGES, LABELS), batch_size=64, pin_memory=True))
    assert all(x.is_pinned() and y.is_pinned() for x, y in got)


def _to(data, device):
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if isinstance(data, dict):
        return {k: _to(v, device) for k, v in data.items()}
    return type(data)(_to(v, device) for v in data)
