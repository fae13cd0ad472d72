"""The fault suite: failures in every stage, dead and late workers, interrupts, abandoned
and orphaned iterators, odd data. Each scenario runs in a process of its own, under a
hard time limit (a hang fails the test instead of stalling the run), and checks there:

* that ferry fails as torch does (type, stage and message; torch's run is made in the
  same process, with the same arguments and an equal generator) or more clearly;
* that it fails promptly;
* that nothing leaks: file descriptors (ferry's ring memfds in particular), threads,
  child processes, /dev/shm entries; and that the interpreter then exits promptly.

The paths: "main" (num_workers=0, torch's own iterator), "process" (two worker
processes), "thread" (two worker threads), "native" (a TensorDataset with the default
collation). The functions named `scenario_*` run in the child (see faultdata.py).
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch.utils.data import DataLoader as TorchDataLoader

import faultdata as fd
import ferry
from conftest import assert_same_batch, assert_same_batches

TESTS = os.path.dirname(os.path.abspath(__file__))
LIMIT_S = 60  # per scenario, interpreter exit included
EXIT_LIMIT_S = 5  # from the scenario's end to the child's exit
PATHS = ["main", "process", "thread", "native"]
ITER_PATH = {"main": "torch", "process": "workers", "thread": "threads", "native": "native"}

# ---------------------------------------------------------------------- the test side


class Zygote:
    """An interpreter with torch and ferry imported that forks one child per scenario
    (faultdata.serve)."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import faultdata; faultdata.serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=TESTS, env=env,
        )
        self._buf = b""

    def _readline(self, deadline: float) -> str | None:
        fd_out = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if select.select([fd_out], [], [], left)[0]:
                chunk = os.read(fd_out, 4096)
                if not chunk:
                    raise RuntimeError(f"the zygote died (exit code {self.proc.wait()})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def run(self, name: str, params: dict, log: str) -> None:
        self.proc.stdin.write((json.dumps([name, params, log]) + "\n").encode())
        self.proc.stdin.flush()
        pid = int(self._readline(time.monotonic() + 60))  # the zygote may still be starting
        status = self._readline(time.monotonic() + LIMIT_S)
        if status is None:  # hung: kill the scenario and its workers (its process group)
            os.killpg(pid, signal.SIGKILL)
            status = self._readline(time.monotonic() + 30)
            pytest.fail(f"{name}{params} hung: killed after {LIMIT_S} s. Its output:\n"
                        f"{read_log(log)}")
        ended = time.time()
        # Its process group (workers included) empties once it has gone: spawn's resource
        # tracker takes a moment to see its parent go. What is still there is killed.
        leftovers = not wait_for(lambda: not group_alive(pid), 3.0)
        if leftovers:
            os.killpg(pid, signal.SIGKILL)
        out = read_log(log)
        code = os.waitstatus_to_exitcode(int(status))
        end = re.search(r"SCENARIO-END (\d+) ([\d.]+)", out)
        assert code == 0 and end is not None, f"{name}{params} failed (exit {code}):\n{out}"
        assert not leftovers, f"{name}{params}: processes outlived it (killed now)\n{out}"
        exit_s = ended - float(end.group(2))
        assert exit_s < EXIT_LIMIT_S, f"{name}{params}: the interpreter took {exit_s:.1f} s to exit"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(cond, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def read_log(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-8000:]


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


@pytest.fixture
def run_child(zygote, tmp_path):
    def run(scenario, **params):
        zygote.run(scenario.__name__, params, str(tmp_path / "child.log"))

    return run


# -------------------------------------------------------------- helpers of the child


def loader_kwargs(path: str, ferry_side: bool, context: str | None = None, **kw) -> dict:
    if path in ("process", "thread"):
        kw["num_workers"] = 2
        if context is not None:
            kw["multiprocessing_context"] = context
    if path == "thread" and ferry_side:
        kw["worker_type"] = "thread"
    return kw


def make_loader(cls, dataset, path: str, seed: int = 0, context: str | None = None, **kw):
    """torch's or ferry's loader on `path`, with a generator seeded with `seed`."""
    kw = loader_kwargs(path, cls is ferry.DataLoader, context, **kw)
    return cls(dataset, generator=torch.Generator().manual_seed(seed), **kw)


def pair(dataset, path: str, **kw):
    return make_loader(TorchDataLoader, dataset, path, **kw), \
        make_loader(ferry.DataLoader, dataset, path, **kw)


def torch_outcome(dataset, path: str, **kw) -> fd.Outcome:
    """What torch's loader does, for reference (see fd.drain on `clear`)."""
    return fd.drain(make_loader(TorchDataLoader, dataset, path, **kw), clear=True)


def plain(path: str, n: int):
    return fd.plain_tensors(n) if path == "native" else fd.Plain(n)


def assert_path(loader, path: str) -> None:
    assert loader.stats().path == ITER_PATH[path], (loader.stats().path, path)


def baseline(path: str) -> fd.Probe:
    """Runs a small ferry loader on `path` once (what torch and ferry set up once per
    process, such as a SIGCHLD handler, is not a leak), then takes the leak baseline.
    Where a scenario spawns its workers, torch's run before this one has started what
    spawning needs once (the resource tracker); ferry's own warm-up forks (quicker)."""
    loader = make_loader(ferry.DataLoader, plain(path, 8), path, batch_size=4)
    assert len(list(loader)) == 2
    assert_path(loader, path)
    del loader
    return fd.Probe()


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1].strip()


def same_error(expected: fd.Outcome, got: fd.Outcome) -> bool:
    """Whether `got` (ferry) fails where `expected` (torch) does, with the same type and
    torch's message: all of it when torch raised in this process (ferry may add notes),
    the original error's line when torch's worker wrapped it ("Caught ... in DataLoader
    worker process N ... Original Traceback")."""
    if not got.failed() or (got.stage, got.type) != (expected.stage, expected.type):
        return False
    if expected.message.startswith("Caught "):
        return last_line(expected.message) in got.text
    if got.message.startswith("Caught "):  # the error torch raises without workers, wrapped
        return expected.text.strip() in got.text
    return got.text.startswith(expected.text)


def assert_same_error(got: fd.Outcome, *torch_outcomes: fd.Outcome) -> None:
    """ferry fails as torch does (as one of `torch_outcomes`, where torch's own ways
    disagree), after the same batches, and promptly."""
    report = "".join(f"torch: {e}\n" for e in torch_outcomes) + f"ferry: {got}"
    assert all(e.failed() for e in torch_outcomes), f"torch should fail here\n{report}"
    matches = [e for e in torch_outcomes if same_error(e, got)]
    assert matches, report
    assert_same_batches(matches[0].batches, got.batches)
    assert got.elapsed < matches[0].elapsed + 3, report


# ----------------------------------------------------------- errors in user code

ERROR_CASES = [
    ("getitem", "main"), ("getitem", "process"), ("getitem", "thread"), ("getitem", "native"),
    ("len", "main"), ("len", "process"), ("len", "thread"),
    ("iter", "main"), ("iter", "process"), ("iter", "thread"),
    ("iterating", "main"), ("iterating", "process"),
    ("collate", "main"), ("collate", "process"), ("collate", "thread"),
    ("worker_init_fn", "process"), ("worker_init_fn", "thread"),
]


def error_case(where: str, path: str):
    n, kw = 24, {"batch_size": 4}
    if where == "getitem" and path == "native":  # the native path's only fault: an index
        return fd.plain_tensors(n), {"batch_sampler": [[0, 1], [2, 3], [4, n + 5], [6]]}
    return {
        "getitem": (fd.Boom(n, at=13), kw),
        "len": (fd.BadLen(n), kw),
        "iter": (fd.BoomIterable(n, at=0), kw),
        "iterating": (fd.BoomIterable(n, at=9), kw),
        "collate": (fd.Plain(n), {**kw, "collate_fn": fd.RefusingCollate(13)}),
        "worker_init_fn": (fd.Plain(n), {**kw, "worker_init_fn": fd.refusing_init}),
    }[where]


def scenario_error(where: str, path: str, context: str | None = None) -> None:
    dataset, kw = error_case(where, path)
    expected = torch_outcome(dataset, path, context=context, **kw)
    probe = baseline(path)
    loader = make_loader(ferry.DataLoader, dataset, path, context=context, **kw)
    got = fd.drain(loader)
    print(f"torch: {expected}\nferry: {got}")
    if path == "thread" and where in ("iter", "iterating"):
        # Thread workers take map-style datasets only, and say so when asked for more.
        assert got.stage == "iter" and got.type is ValueError, got
        assert "worker_type='thread'" in got.message, got
    else:
        assert_same_error(got, expected)
        if got.stage != "iter":
            assert_path(loader, path)
    del loader
    probe.check(f"{where} failing on the {path} path")
    assert_same_batches(expected.batches, got.batches)  # still intact, the iterator gone


@pytest.mark.parametrize("where, path", ERROR_CASES)
def test_error_in_user_code(run_child, where, path):
    run_child(scenario_error, where=where, path=path)


def test_error_in_getitem_with_spawned_workers(run_child):
    run_child(scenario_error, where="getitem", path="process", context="spawn")


# ------------------------------------------------------------------- dead workers

DEATHS = {"exit": "exit code 3", "kill": "SIGKILL", "segv": "SIGSEGV"}


def scenario_worker_death(how: str, context: str | None = None, busy_s: float = 0.0) -> None:
    dataset = fd.Boom(40, at=13, how=how)
    expected = torch_outcome(dataset, "process", context=context, batch_size=4)
    assert expected.failed(), expected
    probe = baseline("process")
    loader = make_loader(ferry.DataLoader, dataset, "process", context=context, batch_size=4)
    got = fd.drain(loader, busy_s=busy_s)
    print(f"torch: {expected}\nferry: {got}")
    assert got.failed() and got.type is expected.type is RuntimeError, got
    # raised by next(), not in the middle of the consumer's own work
    assert got.stage == "next", got
    assert re.search(r"worker \d+ \(pid \d+\)", got.message), f"names no worker: {got}"
    assert DEATHS[how] in got.message, got
    # noticed, not waited on: torch's own watch (a SIGCHLD handler) is the yardstick,
    # measured in the same run (a spawned worker's start-up counts in both, and takes
    # seconds on a busy machine); a hang would exceed it by far more than the margin
    assert got.elapsed < expected.elapsed + 10, f"took {got.elapsed:.1f} s to notice: {got}"
    del loader
    probe.check(f"a worker's death by {how}")
    # The batches delivered before it are intact after the iterator and its rings went.
    good = list(TorchDataLoader(fd.Plain(40), batch_size=4))
    assert_same_batches(good[: len(got.batches)], got.batches)


@pytest.mark.parametrize("how", list(DEATHS))
def test_dead_worker(run_child, how):
    run_child(scenario_worker_death, how=how)


def test_dead_worker_while_the_consumer_is_busy(run_child):
    # The worker dies while the main thread is in the training step: the error comes
    # from the next next() and names the worker (torch's SIGCHLD handler would raise it
    # inside the step, naming no worker).
    run_child(scenario_worker_death, how="segv", busy_s=0.3)


def test_dead_spawned_worker(run_child):
    run_child(scenario_worker_death, how="kill", context="spawn")


# ------------------------------------------------------------------------ timeout


def scenario_timeout(path: str) -> None:
    dataset = fd.Boom(8, at=0, how="sleep", sleep_s=1.5)
    expected = torch_outcome(dataset, path, batch_size=2, timeout=0.5)
    probe = baseline(path)
    loader = make_loader(ferry.DataLoader, dataset, path, batch_size=2, timeout=0.5)
    got = fd.drain(loader)
    print(f"torch: {expected}\nferry: {got}")
    assert expected.failed() and "timed out" in expected.message, expected
    assert got.failed() and (got.stage, got.type) == (expected.stage, expected.type), got
    assert expected.message.strip() in got.message, got
    assert got.elapsed < expected.elapsed + 3, got  # torch's timeout, measured in this run
    del loader, got
    # A thread worker cannot be stopped: it ends when its __getitem__ returns.
    probe.check(f"a timeout on the {path} path", settle=6)


@pytest.mark.parametrize("path", ["process", "thread"])
def test_timeout(run_child, path):
    run_child(scenario_timeout, path=path)


# -------------------------------------------------------------------- interrupts


def scenario_interrupt_in_loop(path: str) -> None:
    """SIGINT raised by the training loop itself, at its fourth batch."""
    torch_loader, loader = pair(plain(path, 24), path, batch_size=2)
    expected = list(torch_loader)
    assert_same_batches(expected, list(loader))
    probe = fd.Probe()
    it = iter(loader)
    try:
        for k, _ in enumerate(it):
            if k == 3:
                signal.raise_signal(signal.SIGINT)
                time.sleep(5)
        raise AssertionError("no KeyboardInterrupt")
    except KeyboardInterrupt:
        pass
    del it
    probe.check(f"an interrupted epoch on the {path} path")
    assert_same_batches(expected, list(loader))  # the loader still works


@pytest.mark.parametrize("path", PATHS)
def test_interrupt_in_the_loop(run_child, path):
    run_child(scenario_interrupt_in_loop, path=path)


def scenario_interrupt_at_random_moments(path: str) -> None:
    """SIGINT from a timer at a random moment of an epoch (in ferry's code or the loop's),
    ten times: each time a KeyboardInterrupt, then nothing leaked and the loader intact."""
    torch_loader, loader = pair(plain(path, 400), path, batch_size=2)
    expected = list(torch_loader)
    started = time.monotonic()
    assert_same_batches(expected, list(loader))
    epoch_s = time.monotonic() - started
    probe = fd.Probe()
    rng = random.Random(0)
    for _ in range(10):
        delay = rng.uniform(0, epoch_s)
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
        it = iter(loader)
        got, batch = [next(it)], None
        try:
            timer.start()
            for batch in it:
                got.append(batch)
            time.sleep(delay + 1)  # the epoch may end before the signal comes
            raise AssertionError("no KeyboardInterrupt")
        except KeyboardInterrupt:
            pass
        timer.join()
        print(f"interrupted after {delay * 1e3:.1f} ms, {len(got)} of {len(expected)} batches")
        assert_same_batches(expected[: len(got)], got)
        del it, got, batch
    probe.check(f"interrupts at random moments on the {path} path")
    assert_same_batches(expected, list(loader))


@pytest.mark.parametrize("path", PATHS)
def test_interrupt_at_random_moments(run_child, path):
    run_child(scenario_interrupt_at_random_moments, path=path)


def scenario_interrupt_while_waiting(path: str, group: bool = False) -> None:
    """SIGINT from a timer while the loop waits for a slow batch (the fourth); with
    `group`, to the whole process group, workers included, as Ctrl-C in a terminal."""
    sleep_s = 1.5 if path == "thread" else 30  # a thread cannot be stopped; a process can
    loader = make_loader(ferry.DataLoader, fd.Boom(24, at=6, how="sleep", sleep_s=sleep_s), path,
                         batch_size=2)
    probe = baseline(path)
    it = iter(loader)
    for _ in range(3):
        next(it)
    target = (os.killpg, os.getpgid(0)) if group else (os.kill, os.getpid())
    timer = threading.Timer(0.3, target[0], (target[1], signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        next(it)
        raise AssertionError("no KeyboardInterrupt")
    except KeyboardInterrupt:
        elapsed = time.monotonic() - started
    timer.join()
    assert elapsed < 0.3 + 1.5, f"KeyboardInterrupt after {elapsed:.1f} s"
    del it
    probe.check(f"an interrupt while waiting on the {path} path", settle=6)


@pytest.mark.parametrize("path", ["main", "process", "thread"])
def test_interrupt_while_waiting(run_child, path):
    run_child(scenario_interrupt_while_waiting, path=path)


def test_ctrl_c_reaches_workers_too(run_child):
    run_child(scenario_interrupt_while_waiting, path="process", group=True)


# ------------------------------------------------------- abandoned and orphaned


def scenario_abandoned_iterators(path: str) -> None:
    loader = make_loader(ferry.DataLoader, plain(path, 64), path, batch_size=4, shuffle=True)
    list(loader)
    probe = baseline(path)
    for _ in range(40):
        it = iter(loader)
        next(it)
        del it
    probe.check(f"40 iterators dropped mid-epoch on the {path} path")


@pytest.mark.parametrize("path", PATHS)
def test_iterators_dropped_mid_epoch(run_child, path):
    run_child(scenario_abandoned_iterators, path=path)


def scenario_iterator_outlives_loader(path: str) -> None:
    def run(cls):
        loader = make_loader(cls, plain(path, 30), path, batch_size=4, shuffle=True)
        it = iter(loader)
        first = next(it)
        del loader
        gc.collect()
        return fd.drain(it), first

    (expected, first_expected) = run(TorchDataLoader)
    probe = baseline(path)
    got, first = run(ferry.DataLoader)
    print(f"torch: {expected}\nferry: {got}")
    assert not expected.failed(), expected
    assert not got.failed(), got
    assert_same_batches([first_expected, *expected.batches], [first, *got.batches])
    del got
    probe.check(f"an iterator outliving its loader on the {path} path")


@pytest.mark.parametrize("path", PATHS)
def test_iterator_outlives_its_loader(run_child, path):
    run_child(scenario_iterator_outlives_loader, path=path)


def scenario_two_iterators_interleaved(path: str) -> None:
    """Two live iterators of one loader (shuffled, one generator), next() alternating
    irregularly: the batches of two torch iterators driven the same way."""

    def run(cls):
        loader = make_loader(cls, plain(path, 20), path, seed=7, batch_size=3, shuffle=True)
        its = {"a": iter(loader), "b": iter(loader)}
        out = []
        for who in itertools.cycle("abbaaab"):
            if not its:
                break
            if who in its:
                try:
                    out.append((who, next(its[who])))
                except StopIteration:
                    del its[who]
                    out.append((who, "end"))
        return out

    expected = run(TorchDataLoader)
    probe = baseline(path)
    got = run(ferry.DataLoader)
    assert [w for w, _ in got] == [w for w, _ in expected]
    for k, ((who, e), (_, g)) in enumerate(zip(expected, got, strict=True)):
        assert_same_batch(e, g, f"step {k} (iterator {who})")
    del got
    probe.check(f"two interleaved iterators on the {path} path")


@pytest.mark.parametrize("path", PATHS)
def test_two_iterators_interleaved(run_child, path):
    run_child(scenario_two_iterators_interleaved, path=path)


class Cycle:
    """Garbage that only the cycle collector frees."""

    def __init__(self, payload) -> None:
        self.payload = payload
        self.me = self


def leave_garbage(cls, what: str) -> None:
    """An iterator that failed (in a reference cycle with its exception, as after any
    error a training script catches), or a batch in a reference cycle (its iterator
    finished and gone)."""
    if what == "iterator":
        failed = fd.drain(cls(fd.Boom(24, at=13), batch_size=4, num_workers=2))
        assert failed.type is ValueError, failed
        return  # its batches go: the iterator alone keeps the worker's ring mapped
    it = iter(cls(fd.Plain(24), batch_size=4, num_workers=2))
    Cycle(next(it))
    list(it)


def scenario_garbage_at_fork(first: str, what: str, second: str) -> None:
    """Garbage of a loader (`leave_garbage`) still uncollected when another loader forks
    its workers: a worker's own garbage collection then finalizes the copy it inherited.
    That must not disturb the worker (which checks that its own memory is intact): the
    second loader gives torch's batches, as it does after torch's garbage. The main
    process does not collect in between here, which makes the timing deterministic."""
    classes = {"torch": TorchDataLoader, "ferry": ferry.DataLoader}
    expected = list(TorchDataLoader(fd.Collecting(8), batch_size=2, num_workers=2))
    probe = baseline("process")
    gc.disable()
    try:
        leave_garbage(classes[first], what)
        got = fd.drain(classes[second](fd.Collecting(8), batch_size=2, num_workers=2))
        print(f"second loader ({second}) after garbage of {first}: {got}")
    finally:
        gc.enable()
    assert not got.failed(), got
    assert_same_batches(expected, got.batches)
    del got
    probe.check("garbage collected in another loader's worker")


@pytest.mark.parametrize(
    "first, what, second",
    [("torch", "iterator", "torch"), ("ferry", "iterator", "torch"),
     ("ferry", "iterator", "ferry"), ("torch", "batch", "torch"), ("ferry", "batch", "torch")],
)
def test_garbage_inherited_by_another_loaders_workers(run_child, first, what, second):
    run_child(scenario_garbage_at_fork, first=first, what=what, second=second)


# --------------------------------------------------------------------- odd data


def scenario_mixed_structures(path: str, first: str) -> None:
    """Here torch's workers and torch's main process may fail differently (a worker
    collates into shared memory, sized first): either of torch's errors will do."""
    dataset = fd.Shapeshifter(first)
    expected = torch_outcome(dataset, path, batch_size=4)
    in_process = torch_outcome(dataset, "main", batch_size=4)
    probe = baseline(path)
    loader = make_loader(ferry.DataLoader, dataset, path, batch_size=4)
    got = fd.drain(loader)
    print(f"torch: {expected}\ntorch without workers: {in_process}\nferry: {got}")
    assert_same_error(got, expected, in_process)
    del loader, got
    probe.check(f"mixed structures on the {path} path")


@pytest.mark.parametrize("first", ["tuple", "dict"])
@pytest.mark.parametrize("path", ["main", "process", "thread"])
def test_samples_of_different_structures(run_child, path, first):
    run_child(scenario_mixed_structures, path=path, first=first)


def scenario_special_values(path: str) -> None:
    n = 7
    dataset = (torch.utils.data.TensorDataset(*fd.special_columns(n)) if path == "native"
               else fd.Specials(n))
    torch_loader, loader = pair(dataset, path, batch_size=3)
    expected = list(torch_loader)
    got = list(loader)
    assert_path(loader, path)
    assert_same_batches(expected, got)
    nan_bits = {b[0].view(torch.int32)[0, 3].item() if path == "native"
                else b["f32"].view(torch.int32)[0, 3].item() for b in got}
    assert nan_bits == {0x7F800001, 0x7F800001 + 3, 0x7F800001 + 6}, nan_bits  # payloads kept


@pytest.mark.parametrize("path", PATHS)
def test_nan_inf_and_empty_tensors_bit_exact(run_child, path):
    run_child(scenario_special_values, path=path)


def scenario_empty_dataset(path: str, kind: str, shuffle: bool) -> None:
    if kind == "iterable":
        dataset = fd.EmptyIterable()
    else:
        dataset = fd.plain_tensors(0) if path == "native" else fd.Plain(0)

    def run(cls):
        made = fd.attempt(lambda: make_loader(cls, dataset, path, batch_size=4, shuffle=shuffle))
        if made[0] == "error":
            return [made]
        loader = made[1]
        return [fd.attempt(lambda: len(loader)), fd.attempt(lambda: list(loader))]

    expected = run(TorchDataLoader)
    got = run(ferry.DataLoader)
    assert got == expected, f"torch: {expected}\nferry: {got}"


@pytest.mark.parametrize(
    "path, kind, shuffle",
    [(p, "map", s) for p in PATHS for s in (False, True)]
    + [("main", "iterable", False), ("process", "iterable", False)],
)
def test_empty_dataset(run_child, path, kind, shuffle):
    run_child(scenario_empty_dataset, path=path, kind=kind, shuffle=shuffle)


def scenario_batch_larger_than_dataset(path: str, drop_last: bool) -> None:
    torch_loader, loader = pair(plain(path, 5), path, batch_size=8, shuffle=True,
                                drop_last=drop_last)
    assert len(loader) == len(torch_loader)
    for _ in range(2):
        assert_same_batches(list(torch_loader), list(loader))


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("path", PATHS)
def test_batch_larger_than_dataset(run_child, path, drop_last):
    run_child(scenario_batch_larger_than_dataset, path=path, drop_last=drop_last)
