"""device=: batches arrive on the named device with torch's values. The CUDA cases skip
without a GPU (FERRY_FAIL_WITHOUT_CUDA=1 turns the skips into failures)."""

from __future__ import annotations

import warnings

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
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("dataset", [TensorDataset(IMAGES, LABELS), PyDataset()])
def test_pin_memory_gives_pinned_batches_equal_to_torch(dataset, num_workers):
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    kw = dict(batch_size=32, shuffle=True, num_workers=num_workers, pin_memory=True)
    expected = list(torch.utils.data.DataLoader(dataset, generator=g1, **kw))
    loader = ferry.DataLoader(dataset, generator=g2, **kw)
    it = iter(loader)
    assert not hasattr(it, "_pin_memory_thread")  # pinned in C++, not by torch's thread
    got = list(it)
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert_same_batch(e, g)
        assert all(t.is_pinned() for t in _tensors(g))


def _layouts_collate(samples):
    """Batches whose tensors are dense but not contiguous (channels_last, permuted) or
    not dense (a strided slice): torch's .to(device) keeps the first kinds' strides."""
    x = torch.stack([torch.as_tensor(s[0]) for s in samples])
    return {"channels_last": x.float().contiguous(memory_format=torch.channels_last),
            "permuted": x.permute(2, 3, 0, 1),
            "sliced": x[:, :, ::2],
            "y": torch.tensor([int(s[1]) for s in samples])}


@needs_cuda
@pytest.mark.parametrize("num_workers", [0, 2])
def test_cuda_batches_keep_torchs_strides(num_workers):
    ds = TensorDataset(IMAGES, LABELS)
    kw = dict(batch_size=16, collate_fn=_layouts_collate, num_workers=num_workers)
    expected = [_to(b, "cuda") for b in torch.utils.data.DataLoader(ds, **kw)]
    got = list(ferry.DataLoader(ds, device="cuda", **kw))
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert_same_batch(e, g)
        for k in e:
            assert g[k].stride() == e[k].stride(), k


def _pin_warnings(make_loader):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the same text from the same line, twice
        batches = list(make_loader())
    return batches, sorted(str(w.message) for w in caught if "pin" in str(w.message))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_pin_memory_without_an_accelerator_warns_like_torch(num_workers):
    if torch.accelerator.is_available():
        pytest.skip("this machine has an accelerator: pinning happens")
    ds = PyDataset()
    kw = dict(batch_size=32, num_workers=num_workers, pin_memory=True)
    expected, torch_warnings = _pin_warnings(lambda: torch.utils.data.DataLoader(ds, **kw))
    got, ferry_warnings = _pin_warnings(lambda: ferry.DataLoader(ds, **kw))
    assert torch_warnings and ferry_warnings == torch_warnings
    for e, g in zip(expected, got, strict=True):
        assert_same_batch(e, g)
        assert not any(t.is_pinned() for t in _tensors(g))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_pin_memory_on_mps_is_off_with_torchs_warning(num_workers, monkeypatch):
    """torch does not pin when the accelerator is MPS; neither does ferry."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a: torch.device("mps"))
    ds = PyDataset()
    kw = dict(batch_size=32, num_workers=num_workers, pin_memory=True)
    expected, torch_warnings = _pin_warnings(lambda: torch.utils.data.DataLoader(ds, **kw))
    got, ferry_warnings = _pin_warnings(lambda: ferry.DataLoader(ds, **kw))
    assert any("MPS" in w for w in torch_warnings) and ferry_warnings == torch_warnings
    for e, g in zip(expected, got, strict=True):
        assert_same_batch(e, g)
        assert not any(t.is_pinned() for t in _tensors(g))


# --- the transfer protocol, under stress -------------------------------------------------
# Big batches and a copy stream held back by a sleep kernel: copies complete long after
# their batch was handed over, so a slot reused or a stream not waited on would show as
# wrong values.

BIG = torch.randint(0, 256, (64, 4, 256, 256), dtype=torch.uint8)  # 256 KiB per sample
BIG_IDS = torch.arange(64)


class BigPyDataset(Dataset):
    def __len__(self):
        return len(BIG)

    def __getitem__(self, i):
        return BIG[i], i


def _copy_stream(loader_iter):
    """The torch.cuda.Stream ferry copies on, for the iterator of a loader."""
    owner = _staging(loader_iter)
    stream_id, device_index, device_type = owner.copy_stream
    return torch.cuda.Stream(stream_id=stream_id, device_index=device_index,
                             device_type=device_type)


def _staging(loader_iter):
    """What stages the iterator's batches: the native gather, or the device copy of the
    other paths."""
    producer = getattr(loader_iter, "_producer", None)
    if producer is not None and producer.path == "native":
        return producer.gather
    return loader_iter._copier.staged


@needs_cuda
@pytest.mark.parametrize("dataset", [TensorDataset(BIG, BIG_IDS), BigPyDataset()])
def test_no_slot_reused_before_its_copy_completed(dataset):
    """The copy stream lags far behind (a sleep kernel before each batch's copy): staging
    slots stay busy past their hand-over, the ring must not refill them, and every
    delivered batch must hold its own samples, read by a kernel on the consumer's stream
    right after hand-over (no synchronize)."""
    loader = ferry.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2,
                              prefetch_factor=1, device="cuda")
    for _epoch in range(3):
        it = iter(loader)
        copy_stream = _copy_stream(it)
        sums = []
        for x, ids in it:
            with torch.cuda.stream(copy_stream):
                torch.cuda._sleep(20_000_000)  # ~10 ms: later copies queue behind it
            torch.cuda._sleep(1_000_000)  # the consumer's stream is busy too
            sums.append((x.sum(dim=(1, 2, 3), dtype=torch.int64), ids))
        torch.cuda.synchronize()
        for s, ids in sums:
            want = BIG[ids.cpu()].sum(dim=(1, 2, 3), dtype=torch.int64)
            assert torch.equal(s.cpu(), want)
    # the lag really outlasted the ring: producers waited for copies to complete, and
    # pinned no memory beyond the ring's slots
    assert _staging(it).ring_copy_waits > 0
    assert _staging(it).ring_untracked_allocations == 0


@needs_cuda
def test_batches_on_a_side_stream_of_the_consumer():
    """The consumer's current stream (not the default one) is the one that waits."""
    loader = ferry.DataLoader(TensorDataset(BIG, BIG_IDS), batch_size=8, device="cuda")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        it = iter(loader)
        copy_stream = _copy_stream(it)
        sums = []
        for x, ids in it:
            with torch.cuda.stream(copy_stream):
                torch.cuda._sleep(20_000_000)
            sums.append((x.sum(dim=(1, 2, 3), dtype=torch.int64), ids))
    side.synchronize()
    for s, ids in sums:
        assert torch.equal(s.cpu(), BIG[ids.cpu()].sum(dim=(1, 2, 3), dtype=torch.int64))


@needs_cuda
@pytest.mark.parametrize("dataset", [TensorDataset(BIG, BIG_IDS), BigPyDataset()])
def test_device_memory_bounded_over_epochs(dataset):
    """At most the prefetch depth of batches on the device, plus the one the loop holds,
    every epoch: nothing accumulates."""
    loader = ferry.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2,
                              persistent_workers=True, device="cuda")
    batch_bytes = 8 * BIG[0].numel() + 8 * 8  # images + int64 ids
    depth = 2 * 2  # prefetch_factor x workers (the native path's threads)
    base = torch.cuda.memory_allocated()
    for _epoch in range(12):
        torch.cuda.reset_peak_memory_stats()
        for x, _ in loader:
            del x
        torch.cuda.synchronize()
        # the caching allocator rounds each block up (to 2 MiB at most)
        grown = torch.cuda.max_memory_allocated() - base
        assert grown <= (depth + 2) * (batch_bytes + (4 << 20)), (grown, _epoch)


def _tensors(batch):
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, dict):
        return [t for v in batch.values() for t in _tensors(v)]
    if isinstance(batch, (list, tuple)):
        return [t for v in batch for t in _tensors(v)]
    return []


def _to(data, device):
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if isinstance(data, dict):
        return {k: _to(v, device) for k, v in data.items()}
    return type(data)(_to(v, device) for v in data)


def test_batches_are_rebuilt_like_torchs_pin_memory_rebuilds_them():
    """The device copy's walk over a batch (CPU-testable): every tensor replaced, in
    order, and containers rebuilt with their types as torch's pin_memory keeps them."""
    import collections

    from ferry._iter import map_tensors

    Point = collections.namedtuple("Point", "x y")
    batch = collections.defaultdict(
        list,
        a=torch.ones(2),
        b=[torch.zeros(1), "id-7", (3, torch.arange(2))],
        c=Point(torch.full((1,), 5.0), None),
        d=collections.OrderedDict(e=torch.arange(3)),
    )
    seen = []

    def double(tensors):
        seen.extend(tensors)
        return [t * 2 for t in tensors]

    out = map_tensors(batch, double)
    assert [t.tolist() for t in seen] == [[1, 1], [0], [0, 1], [5], [0, 1, 2]]
    assert type(out) is collections.defaultdict and out.default_factory is list
    assert out["a"].tolist() == [2, 2] and out["b"][1] == "id-7"
    assert out["b"][2][0] == 3 and out["b"][2][1].tolist() == [0, 2]
    assert type(out["c"]) is Point and out["c"].x.tolist() == [10] and out["c"].y is None
    assert type(out["d"]) is collections.OrderedDict and out["d"]["e"].tolist() == [0, 2, 4]
    assert map_tensors("no tensors", double) == "no tensors"
