"""Resume from the checkpoint code training loops really write (issue 13): a state taken
after `break`, at an epoch's end, before the first `iter()`, loaded twice, or loaded in a
new process gives exactly the batches of the uninterrupted run, computed here."""

from __future__ import annotations

import copy
import gc
import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

import ferry
from conftest import assert_same_batches
from resumedata import (
    Augmented,
    InPlaceState,
    OwnGenerator,
    Plain,
    SelfIterating,
    StatefulIterator,
    Stream,
    StreamWithoutState,
)
from test_resume import Make, _copy, _global_rng, _seed_all, _set_global_rng, _through_torch_save

TESTS = Path(__file__).parent


def loader_of(dataset: Any, nw: int = 0, **kw: Any) -> Make:
    def make() -> ferry.DataLoader:
        ds = dataset() if isinstance(dataset, type) else dataset
        if isinstance(ds, torch.utils.data.IterableDataset):
            kw.pop("shuffle", None)
        return ferry.DataLoader(ds, batch_size=4, num_workers=nw, **kw)

    return make


TENSORS = TensorDataset(torch.arange(40 * 3).reshape(40, 3))
CONFIGS: dict[str, Make] = {
    "native": loader_of(TENSORS, shuffle=True),
    "native-2": loader_of(TENSORS, 2, shuffle=True),
    "python": loader_of(Augmented, shuffle=True),
    "python-2": loader_of(Augmented, 2, shuffle=True),
    "python-2-persistent": loader_of(Augmented, 2, shuffle=True, persistent_workers=True),
    "threads": loader_of(Plain, 2, shuffle=True, worker_type="thread"),
    "stream": loader_of(Stream),
    "stream-2": loader_of(Stream, 2),
    "stream-2-persistent": loader_of(Stream, 2, persistent_workers=True),
    "stream-2-replayed": loader_of(StreamWithoutState, 2),
}


def uninterrupted(make: Make, epochs: int) -> list[Any]:
    _seed_all(0)
    loader = make()
    return [_copy(b) for _ in range(epochs) for b in loader]


def until(loader: ferry.DataLoader, epochs: int, k: int) -> list[Any]:
    """`epochs` whole epochs, then k batches of the next in a loop left with `break`."""
    out = [_copy(b) for _ in range(epochs) for b in loader]
    if k:
        for step, batch in enumerate(loader):
            out.append(_copy(batch))
            if step + 1 == k:
                break
    return out


def checkpointed(make: Make, epochs: int, k: int, total: int, restore_rng: bool = True) -> list:
    """The batches of `total` epochs, with a checkpoint after `epochs` epochs and k batches:
    the state through torch.save, a fresh loader in a process whose global generators are
    others (put back as the checkpoint kept them when `restore_rng`)."""
    _seed_all(0)
    loader = make()
    head = until(loader, epochs, k)
    state = _through_torch_save(loader.state_dict())
    rng = _global_rng()
    del loader
    _seed_all(1234)
    fresh = make()
    fresh.load_state_dict(state)
    if restore_rng:
        _set_global_rng(rng)
    return head + [_copy(b) for _ in range(total - epochs) for b in fresh]


# --- 1. a state taken after `break` ---------------------------------------------------------
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("epochs", [0, 1])
def test_state_after_break(config, epochs):
    make = CONFIGS[config]
    expected = uninterrupted(make, 2)
    assert_same_batches(expected, checkpointed(make, epochs, 3, total=2))


def test_state_after_break_stops_the_workers():
    loader = CONFIGS["python-2"]()
    for step, _ in enumerate(loader):
        if step == 1:
            break
    assert multiprocessing.active_children() == []  # the iterator went, its workers too
    state = loader.state_dict()
    fresh = CONFIGS["python-2"]()
    fresh.load_state_dict(state)
    assert len(list(fresh)) == len(loader) - 2


def test_only_the_latest_iterator_says_where_the_loader_is():
    make = CONFIGS["python"]
    loader = make()
    older = iter(loader)
    next(older)
    newer = iter(loader)
    for _ in range(3):
        next(newer)
    del older  # goes after a newer one was made: says nothing
    gc.collect()
    state = loader.state_dict()
    fresh = make()
    fresh.load_state_dict(state)
    assert len(list(fresh)) == len(loader) - 3
    fresh.load_state_dict(state)
    del newer  # goes after a state was loaded: says nothing either
    gc.collect()
    assert _equal(fresh.state_dict()["iterator"], state["iterator"])


class _FailingState(Plain):
    def state_dict(self) -> dict:
        raise OSError("the state's store is gone")

    def load_state_dict(self, state: dict) -> None:
        pass


def test_a_position_that_could_not_be_recorded_is_said():
    loader = ferry.DataLoader(_FailingState(), batch_size=4)
    for step, _ in enumerate(loader):
        if step == 1:
            break
    with pytest.raises(RuntimeError, match="could not record") as caught:
        loader.state_dict()
    assert isinstance(caught.value.__cause__, OSError)


# --- 2. a worker's dataset state is a snapshot ---------------------------------------------
@pytest.mark.parametrize("nw", [0, 2])
def test_dataset_state_is_copied_when_taken(nw):
    make = loader_of(InPlaceState, nw)
    expected = uninterrupted(make, 2)
    for k in range(1, 6):
        _seed_all(0)
        loader = make()
        it = iter(loader)
        head = [_copy(next(it)) for _ in range(k)]
        state = loader.state_dict()
        next(it)  # the training goes on before the checkpoint is written
        state = _through_torch_save(state)
        del it, loader
        fresh = make()
        fresh.load_state_dict(state)
        got = head + [_copy(b) for _ in range(2) for b in fresh]
        assert_same_batches(expected, got)


# --- 3. the caller's state is read-only -----------------------------------------------------
def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


@pytest.mark.parametrize("config", ["python-2", "stream-2", "in-place", "in-place-2"])
def test_one_state_loaded_twice(config):
    make = {
        "in-place": loader_of(InPlaceState),
        "in-place-2": loader_of(InPlaceState, 2),
    }.get(config) or CONFIGS[config]
    expected = uninterrupted(make, 2)
    _seed_all(0)
    loader = make()
    head = until(loader, 0, 3)
    state = loader.state_dict()
    kept = copy.deepcopy(state)
    rng = _global_rng()
    retried = make()
    retried.load_state_dict(state)
    next(iter(retried))  # a first attempt that fails after a batch...
    retried.load_state_dict(state)  # ...and the retry, on the same loader
    for fresh in (retried, make()):  # and a second loader from the same checkpoint
        fresh.load_state_dict(state)
        _set_global_rng(rng)
        assert_same_batches(expected, head + [_copy(b) for _ in range(2) for b in fresh])
    assert _equal(kept, state)


# --- 4. an IterableDataset that is its own iterator -----------------------------------------
@pytest.mark.parametrize(
    "nw, kw", [(0, {}), (2, {}), (2, {"persistent_workers": True})], ids=["0", "2", "2-persistent"]
)
@pytest.mark.parametrize("epochs, k", [(0, 2), (1, 3), (1, 0)], ids=["mid", "mid-2nd", "end"])
def test_dataset_that_is_its_own_iterator(nw, kw, epochs, k):
    make = loader_of(SelfIterating, nw, **kw)
    expected = uninterrupted(make, 3)
    assert_same_batches(expected, checkpointed(make, epochs, k, total=3))


# --- 5. the datasets' own random state, and the seeds of an epoch not started yet -----------
@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("dataset", [OwnGenerator, StatefulIterator])
def test_dataset_and_iterator_state_of_their_own(dataset, nw):
    make = loader_of(dataset, nw, shuffle=True)
    expected = uninterrupted(make, 3)
    for epochs, k in ((0, 2), (1, 2), (1, 0)):
        assert_same_batches(expected, checkpointed(make, epochs, k, total=3))


@pytest.mark.parametrize("config", ["native", "native-2", "python-2", "python-2-persistent",
                                    "stream-2", "plain"])
@pytest.mark.parametrize("epochs", [0, 1], ids=["before-iter", "epoch-end"])
def test_state_between_epochs_pins_the_next_epoch(config, epochs):
    """Seeds the next epoch draws (the workers' base seed, a RandomSampler's seed without a
    generator) come from the state, not from the new process's global generator."""
    make = loader_of(Plain, shuffle=True) if config == "plain" else CONFIGS[config]
    expected = uninterrupted(make, epochs + 1)
    assert_same_batches(expected, checkpointed(make, epochs, 0, epochs + 1, restore_rng=False))


@pytest.mark.parametrize("config", ["native", "python-2", "python-2-persistent"])
def test_the_training_loops_generator_moves_as_torchs(config):
    """With its global generator put back, the resumed run's training loop draws what the
    uninterrupted one draws: resume takes from it exactly what torch would."""
    make = CONFIGS[config]

    def after(resume: bool) -> torch.Tensor:
        _seed_all(0)
        loader = make()
        list(loader)
        if resume:
            state, rng = loader.state_dict(), _global_rng()
            _seed_all(1234)
            loader = make()
            loader.load_state_dict(state)
            _set_global_rng(rng)
        list(loader)
        return torch.rand(4)

    assert torch.equal(after(False), after(True))


# --- the state's form -----------------------------------------------------------------------
def test_state_survives_torch_save_in_a_new_process(tmp_path):
    make = CONFIGS["python-2"]
    expected = uninterrupted(make, 2)
    _seed_all(0)
    loader = make()
    head = until(loader, 0, 3)
    torch.save({"loader": loader.state_dict(), "rng": torch.get_rng_state()}, tmp_path / "ckpt")
    script = textwrap.dedent(f"""
        import torch, ferry
        from resumedata import Augmented
        ckpt = torch.load({str(tmp_path / "ckpt")!r})
        loader = ferry.DataLoader(Augmented(), batch_size=4, num_workers=2, shuffle=True)
        loader.load_state_dict(ckpt["loader"])
        torch.set_rng_state(ckpt["rng"])
        torch.save([b for _ in range(2) for b in loader], {str(tmp_path / "tail")!r})
    """)
    path = os.pathsep.join([str(Path(ferry.__file__).parent.parent), str(TESTS)])
    env = {**os.environ, "PYTHONPATH": path}
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120, env=env)
    assert_same_batches(expected, head + torch.load(tmp_path / "tail"))


def test_a_state_of_an_older_layout_is_refused():
    make = CONFIGS["python"]
    state = make().state_dict()
    state["ferry_state_version"] = 1
    with pytest.raises(ValueError, match="version 1.*older ferry"):
        make().load_state_dict(state)


def test_snapshot_every_n_steps_is_not_taken():
    with pytest.raises(TypeError, match="snapshot_every_n_steps"):
        ferry.DataLoader(Plain(), snapshot_every_n_steps=10)
