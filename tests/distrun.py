"""One rank of the 2-process torch.distributed tests (gloo, CPU): run by
tests/test_distributed.py through torch.multiprocessing.spawn. Each rank writes what it
saw to `out/rank<r>.pt`; the test compares across ranks and with torch's loader."""

from __future__ import annotations

import inspect
import os
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import ferry  # noqa: E402

N = 51  # not a multiple of the world size: DistributedSampler pads


def dataset() -> TensorDataset:
    x = torch.arange(N * 4, dtype=torch.float32).reshape(N, 4)
    return TensorDataset(x, torch.arange(N))


def indices(batches: list) -> list[list[int]]:
    return [b[1].tolist() for b in batches]


def recreate_like_lightning(loader: ferry.DataLoader, sampler: DistributedSampler) -> DataLoader:
    """What PyTorch Lightning does to inject a DistributedSampler: read every __init__
    parameter back from the attribute of the same name and call the loader's own class."""
    params = inspect.signature(type(loader).__init__).parameters
    skip = {"self", "sampler", "batch_sampler", "shuffle"}
    kwargs = {p: getattr(loader, p) for p in params if p not in skip and hasattr(loader, p)}
    return type(loader)(sampler=sampler, **kwargs)


def train(loader: DataLoader, epochs: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y % 3).backward()
            opt.step()
    return model.module.weight.detach().clone()


def main(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        ds = dataset()
        result: dict = {}
        for nw in (0, 2):
            loader = ferry.DataLoader(ds, batch_size=4, shuffle=True, num_workers=nw,
                                      distributed=True)
            reference = DataLoader(ds, batch_size=4, num_workers=nw,
                                   sampler=DistributedSampler(ds, shuffle=True, seed=0))
            for epoch in (0, 1):
                loader.set_epoch(epoch)
                reference.sampler.set_epoch(epoch)
                result[f"ferry-{nw}-{epoch}"] = indices(list(loader))
                result[f"torch-{nw}-{epoch}"] = indices(list(reference))
            # resume this rank mid-epoch, in a fresh loader
            loader.set_epoch(2)
            it = iter(loader)
            head = [next(it) for _ in range(3)]
            state = loader.state_dict()
            fresh = ferry.DataLoader(ds, batch_size=4, shuffle=True, num_workers=nw,
                                     distributed=True)
            fresh.load_state_dict(state)
            result[f"resume-{nw}"] = (indices(head + list(it)), indices(head + list(fresh)))
        # a loader re-created as Lightning does keeps ferry's class and arguments
        plain = ferry.DataLoader(ds, batch_size=4, shuffle=True, worker_type="thread",
                                 num_workers=2)
        injected = recreate_like_lightning(plain, DistributedSampler(ds, shuffle=True, seed=3))
        result["recreated"] = (type(injected).__module__, injected.worker_type,
                               injected.device, injected.num_workers)
        result["recreated-batches"] = indices(list(injected))
        result["recreated-reference"] = indices(list(
            DataLoader(ds, batch_size=4, sampler=DistributedSampler(ds, shuffle=True, seed=3))))
        # the same training, fed by ferry and by torch
        result["weights-ferry"] = train(ferry.DataLoader(ds, batch_size=4, distributed=True,
                                                         shuffle=True, num_workers=2))
        result["weights-torch"] = train(DataLoader(ds, batch_size=4, num_workers=2,
                                                   sampler=DistributedSampler(ds, seed=0)))
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
