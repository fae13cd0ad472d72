"""memory_budget=: the page-locked and shared memory a loader may hold, enforced with a
clear error instead of growth, and backend_info()'s report of what the process holds."""

from __future__ import annotations

import gc

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

import ferry
from conftest import assert_same_batch


class Images(Dataset):
    """Python samples of 3x32x32 float32 (12 KiB each)."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.full((3, 32, 32), float(i)), i


def shared_bytes():
    return ferry.backend_info()["memory_in_use"]["shared_bytes"]


@pytest.mark.parametrize("bad", [1.5, "1GB", True])
def test_memory_budget_type_is_checked(bad):
    with pytest.raises(TypeError, match="memory_budget"):
        ferry.DataLoader(Images(), memory_budget=bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_memory_budget_must_be_positive(bad):
    with pytest.raises(ValueError, match="memory_budget"):
        ferry.DataLoader(Images(), memory_budget=bad)


def test_workers_within_the_budget_give_torch_batches():
    # a batch of 16 samples is 192 KiB; 2 workers x (6 slots of 240 KiB + header) < 8 MiB
    kw = dict(batch_size=16, num_workers=2, shuffle=True)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    expected = list(torch.utils.data.DataLoader(Images(), generator=g1, **kw))
    got = list(ferry.DataLoader(Images(), generator=g2, memory_budget=8 << 20, **kw))
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert_same_batch(e, g)


def test_a_ring_beyond_the_budget_fails_clearly():
    loader = ferry.DataLoader(Images(), batch_size=16, num_workers=2, memory_budget=1 << 20)
    with pytest.raises(RuntimeError) as info:
        list(loader)
    text = str(info.value)
    assert "memory budget is exhausted" in text and "worker" in text
    assert "512.0 KiB share of memory_budget" in text  # 1 MiB over 2 workers


def test_shared_memory_in_use_is_reported_and_returned():
    gc.collect()
    before = shared_bytes()
    loader = ferry.DataLoader(Images(), batch_size=16, num_workers=2)
    it = iter(loader)
    batch = next(it)
    during = shared_bytes()
    # at least the batch's slot is mapped in this process
    assert during - before >= batch[0].numel() * batch[0].element_size()
    del it, batch
    gc.collect()
    assert shared_bytes() == before


def test_backend_info_reports_memory():
    mem = ferry.backend_info()["memory_in_use"]
    assert set(mem) == {"pinned_bytes", "shared_bytes"}
    assert all(isinstance(v, int) and v >= 0 for v in mem.values())


def test_native_path_without_pinning_ignores_the_budget():
    """Plain (not page-locked) staging memory is ordinary memory, as torch's batches are:
    the budget does not count it, so a tiny budget changes nothing."""
    ds = TensorDataset(torch.arange(4096.0).reshape(1024, 4))
    got = list(ferry.DataLoader(ds, batch_size=256, memory_budget=1))
    assert torch.equal(torch.cat([b[0] for b in got]), ds.tensors[0])


@pytest.mark.needs_cuda
@pytest.mark.parametrize("device", [None, "cuda"])
def test_a_pinned_slot_beyond_the_budget_fails_clearly(device):
    ds = TensorDataset(torch.zeros(1024, 1024, dtype=torch.uint8))
    loader = ferry.DataLoader(ds, batch_size=256, pin_memory=True, device=device,
                              memory_budget=100 << 10)  # less than one 256 KiB batch
    with pytest.raises(RuntimeError, match="memory budget is exhausted"):
        next(iter(loader))


@pytest.mark.needs_cuda
@pytest.mark.parametrize("native", [True, False])
def test_device_staging_within_the_budget(native):
    images = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8)
    ds = TensorDataset(images) if native else PyImages(images)
    loader = ferry.DataLoader(ds, batch_size=64, num_workers=2, device="cuda",
                              memory_budget=64 << 20)
    got = torch.cat([b[0].cpu() for b in loader])
    assert torch.equal(got, images)


class PyImages(Dataset):
    """The same images through Python __getitem__ (worker processes, staged copies)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return (self.images[i],)


def test_a_budget_smaller_than_the_number_of_workers_still_limits():
    loader = ferry.DataLoader(Images(), batch_size=16, num_workers=2, memory_budget=1)
    with pytest.raises(RuntimeError, match="memory budget is exhausted"):
        list(loader)
