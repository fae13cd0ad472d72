"""Datasets, leak probes and the scenario runner of the fault suite (test_faults.py).

Each scenario runs in a process of its own, forked from a "zygote": an interpreter that
imported torch, ferry and the suite once and then only forks, so that a scenario costs
milliseconds to start instead of the second an `import torch` takes. The child makes
itself a process group leader, so that a scenario that hangs is killed together with its
workers. The datasets live here so that spawned workers can import them.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import json
import mmap
import multiprocessing
import multiprocessing.process
import os
import re
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, default_collate

# ------------------------------------------------------------------------------ datasets


class Plain(Dataset):
    """A float row and an int label per sample, both derived from the index."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.arange(3, dtype=torch.float32) + 10 * i, i


def plain_tensors(n: int) -> torch.utils.data.TensorDataset:
    """Plain(n)'s samples as a TensorDataset (the native path)."""
    return torch.utils.data.TensorDataset(
        torch.arange(3, dtype=torch.float32) + 10 * torch.arange(n).view(-1, 1).float(),
        torch.arange(n),
    )


class Boom(Plain):
    """Plain, except at sample `at`, which raises, kills its process or sleeps."""

    def __init__(self, n: int, at: int, how: str = "raise", sleep_s: float = 30.0) -> None:
        super().__init__(n)
        self.at = at
        self.how = how
        self.sleep_s = sleep_s

    def __getitem__(self, i: int):
        if i == self.at:
            if self.how == "raise":
                raise ValueError(f"boom at sample {i}")
            if self.how == "exit":
                os._exit(3)
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "segv":
                ctypes.string_at(0)
            if self.how == "sleep":
                time.sleep(self.sleep_s)
        return super().__getitem__(i)


_PAGES: list[mmap.mmap] = []


class Collecting(Plain):
    """Plain, with a garbage collection at each sample: in a worker, it collects what the
    worker inherited as garbage from the main process. Before that the worker maps some
    memory of its own (as any worker allocating images would), and checks after it
    that its memory is still there."""

    def __getitem__(self, i: int):
        if not _PAGES:
            _PAGES.extend(mmap.mmap(-1, 4096 << k) for k in range(8) for _ in range(4))
            for m in _PAGES:
                m.write(b"\xab" * len(m))
        gc.collect()
        for m in _PAGES:  # SIGSEGV if a finalizer unmapped it
            if m[:] != b"\xab" * len(m):
                raise RuntimeError("a finalizer wrote into this worker's memory")
        return super().__getitem__(i)


class BadLen(Plain):
    def __len__(self) -> int:
        raise ValueError("this dataset cannot say its length")


class BoomIterable(IterableDataset):
    """Yields `at` samples of Plain, then raises; with at=0 `__iter__` itself raises."""

    def __init__(self, n: int, at: int) -> None:
        self.n = n
        self.at = at

    def __iter__(self):
        if self.at == 0:
            raise ValueError("__iter__ refuses")
        return self._samples()

    def _samples(self):
        for i in range(self.n):
            if i == self.at:
                raise ValueError(f"iterable broke at sample {i}")
            yield Plain.__getitem__(self, i)  # type: ignore[arg-type]


class EmptyIterable(IterableDataset):
    def __iter__(self):
        return iter(())


class RefusingCollate:
    """default_collate, except for a batch holding sample `at`."""

    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self, batch):
        if any(label == self.at for _, label in batch):
            raise ValueError(f"collate_fn refuses the batch of sample {self.at}")
        return default_collate(batch)


def refusing_init(worker_id: int) -> None:
    raise ValueError("worker_init_fn refuses to start")


class Shapeshifter(Dataset):
    """Samples 0..5 of one structure (tuple or dict), 6 and 7 of the other: with
    batch_size 4 the second batch mixes them."""

    def __init__(self, first: str) -> None:
        self.first = first

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        x = torch.full((2,), float(i))
        kind = self.first if i < 6 else {"tuple": "dict", "dict": "tuple"}[self.first]
        return (x, i) if kind == "tuple" else {"x": x, "y": i}


def _bits(values: list[int], dtype: Any) -> np.ndarray:
    return np.array(values, dtype=dtype)


def special_columns(n: int) -> list[torch.Tensor]:
    """Columns of NaNs (quiet, negative, signalling, with payloads), infinities, signed
    zeros, subnormals, and empty rows, in several float dtypes; row i differs by i."""
    rows32, rows64, rows16 = [], [], []
    for i in range(n):
        rows32.append(_bits([0x7FC00000, 0xFFC00000, 0x7FC00001 + i, 0x7F800001 + i,
                             0x7F800000, 0xFF800000, 0x80000000, 1 + i], np.uint32))
        rows64.append(_bits([0x7FF8000000000000, 0xFFF8000000000000 + i,
                             0x7FF0000000000001 + i, 0x7FF0000000000000,
                             0xFFF0000000000000, 0x8000000000000000, 1 + i], np.uint64))
        rows16.append(_bits([0x7E00, 0xFE00 + i, 0x7C01 + i, 0x7C00, 0xFC00, 0x8000, 1 + i],
                            np.uint16))
    f32 = torch.from_numpy(np.stack(rows32).view(np.float32))
    f64 = torch.from_numpy(np.stack(rows64).view(np.float64))
    f16 = torch.from_numpy(np.stack(rows16).view(np.float16))
    bf16 = torch.from_numpy(np.stack(rows16).view(np.int16)).view(torch.bfloat16)
    return [f32, f64, f16, bf16, torch.zeros(n, 0), torch.zeros(n, 0, 3, dtype=torch.int64)]


class Specials(Dataset):
    """special_columns' rows as Python samples, plus numpy and Python NaN and inf."""

    def __init__(self, n: int) -> None:
        self.columns = special_columns(n)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        f32, f64, f16, bf16, empty, empty3 = (c[i] for c in self.columns)
        return {
            "f32": f32.clone(),
            "f64": f64.clone(),
            "f16": f16.clone(),
            "bf16": bf16.clone(),
            "empty": (empty.clone(), torch.empty(0, dtype=torch.uint8), empty3.clone()),
            "numpy": np.array([np.nan, -np.inf, np.inf, -0.0, i], dtype=np.float64),
            "python": [float("nan"), float("inf"), -0.0],
        }


# -------------------------------------------------------------------------------- probes

_STARTED_PIDS: set[int] = set()


def track_started_processes() -> None:
    """Records the pid of every multiprocessing process this process starts (a loader's
    workers), to recognise /dev/shm entries named after them."""
    base = multiprocessing.process.BaseProcess
    original = base.start

    def start(self: Any) -> None:
        original(self)
        _STARTED_PIDS.add(self.pid)

    base.start = start  # type: ignore[method-assign]


def _fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listing's own fd, closed by now
            pass
    return out


def _children() -> dict[int, str]:
    """This process's child processes (zombies included), as pid -> state and name."""
    me, out = os.getpid(), {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1: stat.rindex(")")], stat[stat.rindex(")") + 2:]
        state, ppid = rest.split()[:2]
        if int(ppid) == me:
            out[int(name)] = f"{comm} [{state}]"
    return out


def _shm() -> set[str]:
    """/dev/shm entries this scenario could have made: ferry's, and torch's segments named
    after this process or one of the workers it started. (/dev/shm is machine-wide.)"""
    pids = {os.getpid(), *_STARTED_PIDS}
    mine = re.compile(r"torch_(\d+)_")
    out = set()
    for name in os.listdir("/dev/shm"):
        m = mine.match(name)
        if "ferry" in name or (m and int(m.group(1)) in pids):
            out.add(name)
    return out


@dataclass
class Snapshot:
    fds: dict[int, str]
    tasks: int
    threads: list[str]
    children: dict[int, str]
    mp_children: list[str]
    shm: set[str]
    memfds: list[str] = field(default_factory=list)

    @classmethod
    def take(cls) -> Snapshot:
        fds = _fds()
        return cls(
            fds=fds,
            tasks=len(os.listdir("/proc/self/task")),
            threads=sorted(t.name for t in threading.enumerate()),
            children=_children(),
            # The started processes not joined yet, read without polling them (polling
            # would reap an exited worker that the loader forgot to join).
            mp_children=sorted(p.name for p in multiprocessing.process._children),
            shm=_shm(),
            memfds=sorted(t for t in fds.values() if "memfd:ferry" in t),
        )

    def growth_since(self, before: Snapshot) -> list[str]:
        problems = []
        if len(self.fds) > len(before.fds):
            new = sorted(set(self.fds.items()) - set(before.fds.items()))
            problems.append(f"fds {len(before.fds)} -> {len(self.fds)}, new: {new}")
        if len(self.memfds) > len(before.memfds):
            problems.append(f"ferry memfds still open: {self.memfds}")
        if self.tasks > before.tasks or len(self.threads) > len(before.threads):
            problems.append(
                f"threads {before.tasks} -> {self.tasks} (/proc/self/task), "
                f"{before.threads} -> {self.threads} (threading)"
            )
        new_children = {p: s for p, s in self.children.items() if p not in before.children}
        if new_children:
            problems.append(f"child processes left: {new_children}")
        if len(self.mp_children) > len(before.mp_children):
            problems.append(f"processes never joined: {self.mp_children}")
        if self.shm - before.shm:
            problems.append(f"/dev/shm gained {sorted(self.shm - before.shm)}")
        return problems


class Probe:
    """A baseline of this process's fds, threads, child processes and shared memory;
    `check()` waits up to `settle` s for all of them to come back to it."""

    def __init__(self) -> None:
        gc.collect()
        self.before = Snapshot.take()

    def check(self, what: str, settle: float = 5.0) -> None:
        deadline = time.monotonic() + settle
        while True:
            gc.collect()
            problems = Snapshot.take().growth_since(self.before)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not problems, f"{what} leaked:\n  " + "\n  ".join(problems)
        # Also what torch's users check; it joins (reaps) exited children.
        assert multiprocessing.active_children() == [], multiprocessing.active_children()


# ------------------------------------------------------------------------------ outcomes


@dataclass
class Outcome:
    """What running (part of) a loader did: the batches it gave, and where and how it
    failed (stage is None when it did not)."""

    batches: list[Any] = field(default_factory=list)
    stage: str | None = None
    type: type | None = None
    message: str = ""  # str(exc)
    text: str = ""  # the exception's last line(s) as a traceback shows them, notes included
    elapsed: float = 0.0

    def failed(self) -> bool:
        return self.stage is not None

    def __str__(self) -> str:
        if not self.failed():
            return f"{len(self.batches)} batches, no error ({self.elapsed:.2f} s)"
        return (f"{len(self.batches)} batches, then {self.type.__name__} at {self.stage} "
                f"after {self.elapsed:.2f} s:\n{self.text}")


def drain(source: Any, limit: int | None = None, clear: bool = False,
          busy_s: float = 0.0) -> Outcome:
    """Runs iter(source) and then next() until the end, an error, or `limit` batches,
    spending `busy_s` after each batch as a training step would (not in the loader).

    An exception is in a reference cycle with its traceback's frames, so the iterator
    those frames hold goes only with the next garbage collection, and torch's shuts its
    workers down slowly then (5 s each: the queues that would carry their stop message
    are finalized first). `clear` clears the frames, so that the iterator goes at once:
    for torch's runs, made for reference only; ferry's get no such help."""
    out = Outcome()
    started = time.monotonic()
    stage = "iter"
    try:
        it = iter(source)
        stage = "next"
        while limit is None or len(out.batches) < limit:
            try:
                out.batches.append(next(it))
            except StopIteration:
                break
            if busy_s:
                stage = "busy"  # where torch's SIGCHLD handler may raise a worker's death
                time.sleep(busy_s)
                stage = "next"
    except BaseException as exc:  # noqa: BLE001 - the point is to capture it
        out.stage, out.type, out.message = stage, type(exc), str(exc)
        out.text = "".join(traceback.format_exception_only(exc))
        if clear:
            traceback.clear_frames(exc.__traceback__)
    finally:
        out.elapsed = time.monotonic() - started
        it = None  # noqa: F841 - the iterator goes now, not with this frame
    return out


def attempt(fn: Any) -> tuple:
    """("ok", fn()) or ("error", exception type, message)."""
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - the point is to capture it
        return "error", type(exc), str(exc)


# -------------------------------------------------------------------------------- zygote


def _run_child(scenario: Any, params: dict[str, Any], log: str) -> None:
    """In the forked child: a process group of its own, output to `log`, the scenario,
    then the interpreter's exit (whose duration the test measures)."""
    os.setsid()
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    track_started_processes()
    code = 1
    try:
        scenario(**params)
        code = 0
    except BaseException:  # noqa: BLE001 - reported through the log
        traceback.print_exc()
    print(f"SCENARIO-END {code} {time.time():.6f}", flush=True)
    # What an interpreter's exit does that a loader could hold up: joining non-daemon
    # threads (thread workers), then the atexit hooks (multiprocessing's, torch's,
    # ferry's). The rest, tearing down torch's modules, takes half a second and says
    # nothing about the loader: skipped.
    try:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    """The zygote's loop: one JSON request per line (scenario, params, log file); answers
    the child's pid at once, then its wait status when it ends."""
    import test_faults

    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    for line in requests:
        name, params, log = json.loads(line)
        scenario = getattr(test_faults, name)
        pid = os.fork()
        if pid == 0:
            _run_child(scenario, params, log)
        replies.write(f"{pid}\n".encode())
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(f"{status}\n".encode())
        replies.flush()
