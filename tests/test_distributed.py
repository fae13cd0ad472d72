"""Two processes under torch.distributed (gloo, CPU), spawned by the test: distributed=True
shards like DistributedSampler, per-rank resume, Lightning-style re-creation, and DDP
training fed by ferry ending with torch's weights (issue #5)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import distrun
import ferry

WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    if not dist.is_available():
        pytest.skip("this torch has no torch.distributed")
    tmp = tmp_path_factory.mktemp("dist")
    mp.start_processes(distrun.main, args=(WORLD, str(tmp / "init"), str(tmp)), nprocs=WORLD,
                       start_method="spawn", join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("epoch", [0, 1])
def test_ranks_get_torch_batches_disjoint_and_equal_in_number(ranks, nw, epoch):
    per_rank = [r[f"ferry-{nw}-{epoch}"] for r in ranks]
    for r in ranks:
        assert r[f"ferry-{nw}-{epoch}"] == r[f"torch-{nw}-{epoch}"]
    assert len({len(b) for b in per_rank}) == 1, "ranks got different numbers of batches"
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(distrun.N))  # every sample, and only padding repeats
    assert len(seen) - distrun.N == -distrun.N % WORLD


def test_set_epoch_reshuffles(ranks):
    assert ranks[0]["ferry-0-0"] != ranks[0]["ferry-0-1"]


@pytest.mark.parametrize("nw", [0, 2])
def test_each_rank_resumes_exactly(ranks, nw):
    for r in ranks:
        uninterrupted, resumed = r[f"resume-{nw}"]
        assert resumed == uninterrupted


def test_lightning_style_recreation_keeps_ferry(ranks):
    for r in ranks:
        module, worker_type, device, num_workers = r["recreated"]
        assert module == ferry.DataLoader.__module__
        assert (worker_type, device, num_workers) == ("thread", None, 2)
        assert r["recreated-batches"] == r["recreated-reference"]


def test_ddp_training_fed_by_ferry_ends_with_torchs_weights(ranks):
    for r in ranks:
        assert torch.equal(r["weights-ferry"], r["weights-torch"])


def test_distributed_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        ferry.DataLoader(distrun.dataset(), distributed=True)


def test_a_state_from_another_rank_is_rejected():
    ds = distrun.dataset()

    def make(rank: int) -> ferry.DataLoader:
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank)
        return ferry.DataLoader(ds, batch_size=4, sampler=sampler)

    state = make(0).state_dict()
    with pytest.raises(ValueError, match="shard"):
        make(1).load_state_dict(state)
