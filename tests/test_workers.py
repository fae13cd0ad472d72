"""Process workers (num_workers > 0) for Python datasets: the same batches as torch's
workers, torch's errors, prompt failure on dead workers, and nothing leaked."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch.utils.data import DataLoader as TorchDataLoader

import ferry
import workerdata as wd
from conftest import assert_same_batches

CONTEXTS = ["fork", "spawn", "forkserver"]


def both(dataset, **kw):
    """(torch's batches, ferry's batches) for the same arguments and generator seed."""
    seed = kw.pop("seed", 0)
    expected = list(TorchDataLoader(dataset, generator=torch.Generator().manual_seed(seed), **kw))
    it = iter(ferry.DataLoader(dataset, generator=torch.Generator().manual_seed(seed), **kw))
    assert it.path == "workers"
    return expected, list(it)


@pytest.mark.parametrize("num_workers", [1, 2, 3])
@pytest.mark.parametrize(
    "kw",
    [
        {"batch_size": 8, "shuffle": True},
        {"batch_size": 7, "drop_last": True},
        {"batch_size": None},
        {"batch_size": 5, "collate_fn": wd.collate_to_dict},
        {"batch_size": 4, "prefetch_factor": 1},
    ],
)
def test_same_batches_as_torch(kw, num_workers):
    expected, got = both(wd.Mixed(), num_workers=num_workers, **kw)
    assert_same_batches(expected, got)


@pytest.mark.parametrize("context", CONTEXTS[1:])
def test_start_methods(context):
    expected, got = both(wd.Mixed(30), num_workers=2, batch_size=4, shuffle=True,
                         multiprocessing_context=context)
    assert_same_batches(expected, got)


@pytest.mark.parametrize("context", CONTEXTS[1:])
def test_spawned_workers_get_the_dataset_pickled_once(context):
    """Not once per worker as torch does: one pickle, read by every worker, with the
    dataset's tensors shared as torch shares them."""
    kw = {"num_workers": 3, "batch_size": 4, "multiprocessing_context": context}
    expected = list(TorchDataLoader(wd.Carrying(), **kw))
    wd.Carrying.pickled = 0
    got = list(ferry.DataLoader(wd.Carrying(), **kw))
    assert_same_batches(expected, got)
    assert all(b["shared"].all() and b["named"].all() for b in got)
    assert wd.Carrying.pickled == 1


def test_spawned_workers_get_a_connection_the_dataset_holds():
    """A connection is passed, descriptor and all, to each worker being started (plain
    pickle would send a bare number): set aside from the one pickle like tensors."""
    kw = {"num_workers": 2, "batch_size": 4, "multiprocessing_context": "spawn"}
    ds = wd.WithPipe()
    expected = list(TorchDataLoader(ds, **kw))
    wd.WithPipe.pickled = 0
    got = list(ferry.DataLoader(ds, **kw))
    assert_same_batches(expected, got)
    assert all(b["pipe"].all() for b in got)
    assert wd.WithPipe.pickled == 1


@pytest.mark.parametrize("how", ["lock", "collate method", "shared object"])
def test_spawned_workers_get_a_dataset_only_torch_can_send_as_torch_sends_it(how):
    """A lock can only be pickled for a process being started, and a collate_fn that
    reaches the dataset or an object it holds must find the worker's one: those go
    torch's way, pickled with the rest for each worker."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    kw = {"num_workers": 2, "batch_size": 4, "multiprocessing_context": context}
    if how == "shared object":
        ds = wd.WithVocabulary()
        kw["collate_fn"] = wd.CollateWith(ds.vocab)
    else:
        ds = wd.Carrying(context.Lock()) if how == "lock" else wd.Carrying()
        kw["collate_fn"] = ds.collate if how == "collate method" else None
    expected = list(TorchDataLoader(ds, **kw))
    wd.Carrying.pickled = 0
    got = list(ferry.DataLoader(ds, **kw))
    assert_same_batches(expected, got)
    if how != "shared object":
        assert wd.Carrying.pickled >= 2  # for each worker (after a first try, for the lock)


@pytest.mark.parametrize("batch_size, drop_last", [(4, False), (4, True), (None, False)])
def test_iterable_dataset_sharded_per_worker(batch_size, drop_last):
    expected, got = both(wd.Shards(23), num_workers=3, batch_size=batch_size, drop_last=drop_last)
    assert_same_batches(expected, got)


def test_worker_info_seeds_and_init_fn():
    expected, got = both(wd.WhoAmI(), num_workers=2, batch_size=2, worker_init_fn=wd.record_init)
    assert_same_batches(expected, got)
    assert {w for b in got for w in b["init"].tolist()} == {0, 100}


def test_persistent_workers_over_epochs():
    kw = {"batch_size": 6, "shuffle": True, "num_workers": 2, "persistent_workers": True}
    ours = ferry.DataLoader(wd.Mixed(), generator=torch.Generator().manual_seed(4), **kw)
    theirs = TorchDataLoader(wd.Mixed(), generator=torch.Generator().manual_seed(4), **kw)
    for _ in range(3):
        assert_same_batches(list(theirs), list(ours))


def test_in_order_false_gives_every_batch_once():
    # No random draws here: with in_order=False torch itself may give a batch to another
    # worker, whose generators then differ.
    expected, got = both(wd.Tensors(100), num_workers=2, batch_size=4, in_order=False)
    key = lambda b: b[1][0].item()  # noqa: E731
    assert_same_batches(sorted(expected, key=key), sorted(got, key=key))


def test_batches_that_outgrow_the_ring():
    """A worker sizes its ring from its first batch and grows it when a later batch is
    larger; batches from the earlier ring stay intact while held."""
    expected, got = both(wd.Growing(), num_workers=2, batch_size=4, collate_fn=wd.pad_collate)
    assert_same_batches(expected, got)


def test_tensor_layouts_of_a_custom_collate():
    """A collate_fn's dense tensors that are not contiguous (channels_last, permuted)
    arrive with torch's strides, in slot views and in copies out of the slot (a list
    holds more batches than are left in their slots); other views with torch's values."""
    kw = {"num_workers": 2, "batch_size": 8, "collate_fn": wd.layouts_collate}
    expected = list(TorchDataLoader(wd.Tensors(64), **kw))
    it = iter(ferry.DataLoader(wd.Tensors(64), **kw))
    got = list(it)
    assert it.copied_batches > 0
    assert_same_batches(expected, got)
    for e, g in zip(expected, got, strict=True):
        for k in ("channels_last", "permuted"):
            assert g[k].stride() == e[k].stride(), k


def _write_through_inputs(b):
    b["inputs"].mul_(-1)


def _write_through_each(b):
    for k, t in b.items():
        t.view(-1)[-1] = -1 - len(k)


def _write_inside_wide(b):
    b["wide"][550] = -5.0


@pytest.mark.parametrize("held", [1, 8])
@pytest.mark.parametrize(
    "collate, write",
    [(wd.aliasing_collate, _write_through_inputs),
     (wd.same_address_collate, _write_through_each),
     (wd.scattered_views_collate, _write_inside_wide)],
)
def test_tensors_sharing_memory_share_it_as_with_torch(collate, write, held):
    """As torch's workers send each storage whole: a tensor twice in a batch comes back
    as one object, and views of one storage still share its memory (an in-place change
    through one shows through the others exactly as with torch), in slot views (held=1)
    and in copies out of the slot (held=8); a tensor of its own is copied alone, not
    keeping its batch."""
    kw = {"num_workers": 2, "batch_size": 4, "collate_fn": collate}
    expected = list(TorchDataLoader(wd.Tensors(64), **kw))
    it = iter(ferry.DataLoader(wd.Tensors(64), **kw))
    got = [next(it) for _ in range(held)]
    assert (it.copied_batches > 0) == (held > 2)
    for e, g in zip(expected, got, strict=False):
        assert_same_batches([e], [g])
        for b in (e, g):
            assert all(b[k] is b[k.removesuffix("_again")] for k in b if k.endswith("_again"))
            write(b)
        assert_same_batches([e], [g])
    if held > 2 and collate is wd.aliasing_collate:  # the labels do not keep their batch
        labels = got[-1]["labels"]
        assert labels.untyped_storage().nbytes() < 4 * labels.nbytes


def test_nested_tensors_from_a_collate_fn():
    kw = {"num_workers": 2, "batch_size": 3, "collate_fn": wd.nested_collate}
    expected = list(TorchDataLoader(wd.Tensors(12), **kw))
    got = list(ferry.DataLoader(wd.Tensors(12), **kw))
    assert [[t.tolist() for t in b.unbind()] for b in got] == [
        [t.tolist() for t in b.unbind()] for b in expected
    ]


def test_a_plain_loop_gets_views_not_copies():
    """Batches that arrive early wait in torch's reorder buffer; they must not count as
    held by the user, or every batch would be copied out of its slot."""
    it = iter(ferry.DataLoader(wd.Tensors(400), batch_size=4, num_workers=2, prefetch_factor=4))
    n = sum(1 for _ in it)
    assert n == 100
    assert it.copied_batches == 0


def test_abandoned_persistent_epochs_free_their_slots():
    loader = ferry.DataLoader(wd.Tensors(400), batch_size=4, num_workers=2,
                              persistent_workers=True)
    for _ in range(6):  # torch drains and drops the batches in flight at each new epoch
        it = iter(loader)
        next(it)
    held = list(it)
    assert len(held) == 99
    state = ferry._ext.load().SlotState
    rings = list(it._producer._rings.values())
    counts = [(r.count(state.READY), r.count(state.FILLING)) for r in rings]
    assert rings and all(c == (0, 0) for c in counts), counts


def test_held_batches_stay_intact():
    """Views of ring slots survive later batches; beyond a few held batches ferry copies
    out instead of running out of slots: 10,000 held batches, with 256 file descriptors
    (torch fails with "Too many open files" after a few hundred)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        held = list(ferry.DataLoader(wd.Tensors(10_000), batch_size=1, num_workers=2))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(held) == 10_000
    for i, (a, b, c) in enumerate(held):
        assert a.tolist() == [[i] * 4] and b.item() == i and c.tolist() == [[i, i + 1, i + 2]]


# ----------------------------------------------------------------------------- errors


def error_of(fn):
    """The exception `fn` raises, its traceback dropped so that the iterator its frames
    hold shuts down now (torch's own takes 5 s per worker when collected in a cycle)."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc.with_traceback(None)
    return None


def test_exception_in_getitem_names_worker_indices_and_traceback():
    def run(cls):
        return error_of(lambda: list(cls(wd.Failing("raise"), batch_size=4, num_workers=2)))

    exc, theirs = run(ferry.DataLoader), run(TorchDataLoader)
    assert type(exc) is type(theirs) is KeyError
    text = str(exc)
    assert "DataLoader worker process 1" in text
    assert "sample indices [12, 13, 14, 15]" in text
    assert "no sample 13" in text
    assert 'raise KeyError(f"no sample {i}")' in text  # the original traceback


def test_ragged_samples_raise_torchs_error():
    exc = error_of(lambda: list(ferry.DataLoader(wd.Ragged(), batch_size=5, num_workers=2)))
    theirs = error_of(lambda: list(TorchDataLoader(wd.Ragged(), batch_size=5, num_workers=2)))
    assert type(exc) is type(theirs) is RuntimeError
    assert "stack expects each tensor to be equal size" in str(exc)


@pytest.mark.parametrize(
    "how, expect",
    [("exit", "exit code 3"), ("exit0", "exit code 0"), ("kill", "SIGKILL"), ("segv", "SIGSEGV")],
)
def test_dead_worker_is_reported_promptly(how, expect):
    loader = ferry.DataLoader(wd.Failing(how), batch_size=4, num_workers=2)
    start = time.monotonic()
    with pytest.raises(RuntimeError) as info:
        list(loader)
    elapsed = time.monotonic() - start
    text = str(info.value)
    assert "DataLoader worker" in text
    assert expect in text or ("killed by signal" in text and how in ("kill", "segv")), text
    assert elapsed < 10, f"took {elapsed:.1f} s to notice"


def test_timeout_names_the_worker_the_indices_and_its_stack():
    loader = ferry.DataLoader(wd.Failing("sleep", at=0), batch_size=2, num_workers=1, timeout=0.5)
    with pytest.raises(RuntimeError, match="timed out after 0.5 seconds") as info:
        list(loader)
    text = str(info.value)
    assert "sample indices [0, 1]" in text and "worker 0" in text
    assert "workerdata.py" in text and "__getitem__" in text  # the worker's stack


def test_user_worker_init_fn_still_runs():
    expected, got = both(wd.WhoAmI(), num_workers=2, batch_size=4, worker_init_fn=wd.record_init)
    assert_same_batches(expected, got)


# ------------------------------------------------------------------------------ leaks


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run_isolated(script: str, timeout: float = 240) -> str:
    """Runs `script` in a fresh interpreter (so that objects of earlier tests, such as
    torch's spawn-context semaphores, cannot blur what it counts); returns its stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                         capture_output=True, text=True, timeout=timeout,
                         cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


LEAK_PROBES = """
    import gc, multiprocessing, os, time
    def fds(): return len(os.listdir("/proc/self/fd"))
    def threads(): return len(os.listdir("/proc/self/task"))
    def shm():
        # What a loader could leave behind: torch's tensor segments, anything of ferry's.
        # Python's own named semaphores (sem.mp-*, from spawn/forkserver queues) are left
        # out: their names say nothing of their process, and other processes on the
        # machine make them too.
        return {e for e in os.listdir("/dev/shm") if not e.startswith("sem.mp-")}
    def settled(before):
        # torch's queue feeder threads close their pipes just after shutdown
        deadline = time.monotonic() + 5
        while (fds(), threads()) > before and time.monotonic() < deadline:
            time.sleep(0.02)
        return fds(), threads()
"""


def test_no_fd_thread_process_or_shm_growth_over_abandoned_iterators():
    out = run_isolated(LEAK_PROBES + """
    import ferry, workerdata as wd
    loader = ferry.DataLoader(wd.Mixed(), batch_size=4, num_workers=2, shuffle=True)
    list(loader); gc.collect()
    before, shm_before = (fds(), threads()), shm()
    for _ in range(40):
        it = iter(loader)
        next(it)
        del it
    gc.collect()
    assert multiprocessing.active_children() == []
    after = settled(before)
    assert after[0] <= before[0], f"fds {before[0]} -> {after[0]}"
    assert after[1] <= before[1], f"threads {before[1]} -> {after[1]}"
    assert shm() <= shm_before, f"/dev/shm gained {shm() - shm_before}"
    print("clean")
    """)
    assert "clean" in out


def test_errors_and_dead_workers_leave_no_shm():
    out = run_isolated(LEAK_PROBES + """
    import ferry, workerdata as wd
    before = shm()
    for how in ("raise", "kill", "segv"):
        try:
            list(ferry.DataLoader(wd.Failing(how), batch_size=4, num_workers=2))
        except (KeyError, RuntimeError):
            pass
        else:
            raise AssertionError(f"{how}: no error")
    gc.collect()
    assert multiprocessing.active_children() == []
    assert shm() <= before, f"/dev/shm gained {shm() - before}"
    print("clean")
    """)
    assert "clean" in out


def test_holding_every_batch_at_a_low_fd_limit():
    """torch shares one file descriptor per tensor with its workers, so holding many
    batches runs out of descriptors; ferry sends none."""
    out = run_isolated("""
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
        import ferry, workerdata as wd
        held = list(ferry.DataLoader(wd.Tensors(3000), batch_size=1, num_workers=2))
        assert len(held) == 3000
        assert all(b.item() == i for i, (_, b, _) in enumerate(held))
        print("held", len(held))
    """)
    assert "held 3000" in out
