#!/usr/bin/env python3
"""ferry's process workers against torch.utils.data.DataLoader, side by side, same process.

W2:      a Python map-style dataset over uint8 3x40x40 images in a numpy array; each
         __getitem__ takes a random 32x32 crop, flips it at random and converts it to
         float32 / 255 in numpy (numpy's global generator, which torch seeds per worker);
         samples are (tensor, int label).
W2-dict: the same, samples {"image": tensor, "label": int, "id": "img-<i>"}.
TTFB:    time to the first batch with 2 workers (construct the loader, iter(), next()),
         under the fork and spawn start methods.
HELD:    every batch of a 3,000-sample dataset (batch size 1, three tensors per sample,
         2 workers) kept in a list, in a child process whose soft RLIMIT_NOFILE is low.

Throughput figures are samples/s, the median of R interleaved runs (torch, ferry, torch,
ferry, ...) after one excluded warm-up pass each, shown as a ratio against the best
torch configuration measured in the same run. Nothing is asserted: goals are printed
next to the figures.

    PYTHONPATH=python python3 benchmarks/bench_workers.py [--quick] [--json PATH]
        [--workloads W2,W2-dict,TTFB,HELD] [--repeats R] [--tries T] [--nofile N]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing
from torch import Tensor
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset

import ferry

from .common import Config, Progress, loadavg, machine_info, measure

IMAGE_SHAPE = (3, 40, 40)
CROP = 32
NUM_CLASSES = 10
WORKLOADS = ("W2", "W2-DICT", "TTFB", "HELD")
W2_GOAL_VS_TORCH = 1.8
HELD_CHILD_RESULT = "HELD-RESULT "  # the line of the child's stdout that carries its result
BUSY_CORES = 0.1  # other processes' average CPU use above which a workload is flagged


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int
    tries: int
    workloads: tuple[str, ...]
    nofile: int
    batch_size: int = 256
    seed: int = 0
    images: int = 20_000
    warmup_batches: int = 10
    held_samples: int = 3_000
    held_timeout_s: float = 120.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        workloads = tuple(w.strip().upper() for w in args.workloads.split(",") if w.strip())
        unknown = sorted(set(workloads) - set(WORKLOADS))
        if unknown:
            raise SystemExit(f"unknown workload(s) {unknown}; choose from {','.join(WORKLOADS)}")
        repeats = args.repeats if args.repeats is not None else (2 if args.quick else 9)
        tries = args.tries if args.tries is not None else (2 if args.quick else 5)
        if repeats < 1 or tries < 1:
            raise SystemExit("--repeats and --tries must be >= 1")
        if args.quick:  # the same sizes (an epoch is already short), fewer runs
            return cls(True, repeats, tries, workloads, args.nofile, warmup_batches=5)
        return cls(False, repeats, tries, workloads, args.nofile)


# --------------------------------------------------------------------------- datasets
# At module level, so that spawned workers (which import this script as __mp_main__)
# and the held-batches child can find them.


class RandomCrops(Dataset[tuple[Tensor, int]]):
    """uint8 images in one numpy array; per call a random crop, a random horizontal flip
    and a float32 conversion, drawn from numpy's global generator."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)
        self.labels = rng.integers(0, NUM_CLASSES, n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def augmented(self, i: int) -> Tensor:
        top = np.random.randint(0, IMAGE_SHAPE[1] - CROP + 1)
        left = np.random.randint(0, IMAGE_SHAPE[2] - CROP + 1)
        crop = self.images[i, :, top : top + CROP, left : left + CROP]
        if np.random.rand() < 0.5:
            crop = crop[:, :, ::-1]
        return torch.from_numpy(crop.astype(np.float32) / 255)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.augmented(i), int(self.labels[i])


class RandomCropsDict(RandomCrops):
    """The same samples as dicts, with a string id (collated into a list of str)."""

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return {"image": self.augmented(i), "label": int(self.labels[i]), "id": f"img-{i}"}


class ThreeTensors(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Three small tensors per sample whose values come from the index (checkable)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return torch.full((4,), i, dtype=torch.int64), torch.tensor(float(i)), torch.arange(3) + i


# ----------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Run:
    """One measured pass: samples delivered, seconds, and which iterator served it."""

    samples: int
    seconds: float
    path: str


@dataclass
class Row:
    """A config's measured runs; holds no loader, so workers and data can go."""

    name: str
    kind: str
    note: str
    runs: list[Run] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [r.samples / r.seconds for r in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def median_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def spread_pct(self) -> float:
        """(max - min) / median of the rates, in %: a quick look at the noise."""
        rates = self.rates
        return 100.0 * (max(rates) - min(rates)) / statistics.median(rates)

    @property
    def paths(self) -> list[str]:
        return sorted({r.path for r in self.runs})


def touch(batch: Any) -> int:
    """Reads one element of every tensor in the batch (tuple, list or dict); returns the
    batch's sample count. Nothing is kept."""
    leaves = batch.values() if isinstance(batch, dict) else batch
    samples = 0
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            int(leaf.reshape(-1)[-1])
        samples = len(leaf)
    return samples


def iterator_path(it: object) -> str:
    """Which of ferry's producers serves an iterator ("workers", "threads", ...), or
    torch's iterator class."""
    return str(getattr(it, "path", type(it).__name__))


def time_epoch(loader: Iterable[Any], max_batches: int | None) -> Run:
    """Iterates `loader` for an epoch (or `max_batches`). iter() is inside the timed
    region: worker start-up is paid every epoch unless workers persist."""
    samples = 0
    start = time.perf_counter()
    it = iter(loader)
    path = iterator_path(it)
    for i, batch in enumerate(it):
        samples += touch(batch)
        if max_batches is not None and i + 1 >= max_batches:
            break
    elapsed = time.perf_counter() - start
    del it  # shutdown (workers joined) outside the timed region
    return Run(samples, elapsed, path)


# ---------------------------------------------------------------- what else happened


@dataclass
class Watch:
    """What else happened while a workload ran: the CPU other processes used, and errors
    Python could only print ("Exception ignored in ...", e.g. from an iterator's __del__)."""

    other_cores: float | None = None
    ignored_errors: list[str] = field(default_factory=list)


def cpu_seconds() -> tuple[float, float, float] | None:
    """(wall, busy CPU seconds of the whole machine, CPU seconds of this process and its
    reaped children), or None where /proc/stat is missing."""
    try:
        head = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, head[1:9])
    except (OSError, ValueError):
        return None
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


@contextlib.contextmanager
def watching() -> Iterator[Watch]:
    """Collects a Watch over the block. Workers count as ours once they are reaped, so
    the block must end with every loader gone (a gc pass runs here first)."""
    watch = Watch()
    old_hook = sys.unraisablehook

    def hook(u: Any) -> None:
        what = first_line(f"{u.exc_type.__name__}: {u.exc_value}")
        watch.ignored_errors.append(re.sub(r"pid \d+", "pid N", what))

    sys.unraisablehook = hook
    before = cpu_seconds()
    try:
        yield watch
    finally:
        gc.collect()
        sys.unraisablehook = old_hook
        after = cpu_seconds()
        if before is not None and after is not None:
            wall, busy, ours = (a - b for a, b in zip(after, before, strict=True))
            watch.other_cores = max(0.0, (busy - ours) / wall)


# -------------------------------------------------------------------------- workloads


def loader_kwargs(settings: Settings, workers: int, **extra: Any) -> dict[str, Any]:
    return {
        "batch_size": settings.batch_size,
        "shuffle": True,
        "num_workers": workers,
        "generator": torch.Generator().manual_seed(settings.seed),
        **extra,
    }


def fresh_loader_config(
    cls: type[TorchDataLoader], dataset: Dataset[Any], settings: Settings, workers: int
) -> Config:
    """A new loader per run, as a training loop without persistent workers sees it."""
    kind = "torch" if cls is TorchDataLoader else "ferry"

    def make() -> TorchDataLoader:
        return cls(dataset, **loader_kwargs(settings, workers))

    return Config(
        f"{kind} nw={workers}",
        kind,
        run=lambda: time_epoch(make(), None),
        warm_up=lambda: time_epoch(make(), settings.warmup_batches),
    )


def persistent_config(
    cls: type[TorchDataLoader], dataset: Dataset[Any], settings: Settings, workers: int
) -> Config:
    """One loader with persistent workers: the warm-up is its first epoch (workers start),
    each run a later epoch."""
    kind = "torch" if cls is TorchDataLoader else "ferry"
    holder: list[TorchDataLoader] = []

    def warm_up() -> Run:
        holder.append(cls(dataset, **loader_kwargs(settings, workers, persistent_workers=True)))
        return time_epoch(holder[0], None)

    return Config(
        f"{kind} nw={workers}, persistent, later epoch",
        "reference",
        run=lambda: time_epoch(holder[0], None),
        warm_up=warm_up,
        note="persistent_workers=True; runs are epochs after the first, so no worker "
        "start-up; a reference, not one of the compared configs",
    )


def getitem_alone_config(dataset: Dataset[Any], settings: Settings) -> Config:
    """__getitem__ over a shuffled epoch in this process, no loader and no collation: what
    one core produces. Two workers on two cores cannot do better than twice this."""

    def run() -> Run:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(settings.seed))
        start = time.perf_counter()
        for i in order.tolist():
            dataset[i]
        return Run(len(order), time.perf_counter() - start, "none")

    return Config(
        "__getitem__ alone, 1 process",
        "reference",
        run,
        run,
        note="no loader, no collation: what one core produces; the gap to torch nw=0 is "
        "the loader's and default_collate's share",
    )


def throughput_configs(dataset: Dataset[Any], settings: Settings) -> list[Config]:
    fresh = [
        (TorchDataLoader, 0),
        (TorchDataLoader, 1),
        (ferry.DataLoader, 1),
        (TorchDataLoader, 2),
        (ferry.DataLoader, 2),
    ]
    configs = [fresh_loader_config(cls, dataset, settings, w) for cls, w in fresh]
    configs += [
        persistent_config(TorchDataLoader, dataset, settings, 2),
        persistent_config(ferry.DataLoader, dataset, settings, 2),
        getitem_alone_config(dataset, settings),
    ]
    return configs


@dataclass
class WorkloadResult:
    name: str
    title: str
    rows: list[Row]
    notes: list[str]
    watch: Watch

    def best(self, kind: str) -> Row | None:
        of_kind = [r for r in self.rows if r.kind == kind]
        return max(of_kind, key=lambda r: r.median) if of_kind else None

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)


def run_throughput(name: str, dataset: RandomCrops, settings: Settings) -> WorkloadResult:
    with Progress(name) as progress, watching() as watch:
        # watching()'s gc pass stops the persistent loaders' workers
        rows = measure(throughput_configs(dataset, settings), settings.repeats, progress, Row)
    n = len(dataset)
    sample = "(tensor, int)" if name == "W2" else '{"image", "label", "id": "img-<i>"}'
    return WorkloadResult(
        name,
        f"map-style Python dataset, {n:,} uint8 {'x'.join(map(str, IMAGE_SHAPE))} images "
        f"({dataset.images.nbytes / 1e6:.0f} MB numpy array), random {CROP}x{CROP} crop + "
        f"flip + float32/255 per __getitem__, samples {sample}",
        rows,
        [
            "each fresh-loader run is one full epoch; worker start-up (fork) is inside it, "
            "as a user pays it every epoch without persistent_workers",
            "best torch = the fastest of torch nw=0, nw=1, nw=2",
        ],
        watch,
    )


def first_batch(
    cls: type[TorchDataLoader], dataset: Dataset[Any], settings: Settings, context: str
) -> Run:
    """Seconds from constructing a 2-worker loader to holding its first batch."""
    start = time.perf_counter()
    loader = cls(dataset, **loader_kwargs(settings, 2, multiprocessing_context=context))
    it = iter(loader)
    samples = touch(next(it))
    elapsed = time.perf_counter() - start
    path = iterator_path(it)
    del it, loader  # shutdown outside the timed region
    return Run(samples, elapsed, path)


def ttfb_config(
    cls: type[TorchDataLoader], dataset: Dataset[Any], settings: Settings, context: str
) -> Config:
    kind = "torch" if cls is TorchDataLoader else "ferry"

    def once() -> Run:
        return first_batch(cls, dataset, settings, context)

    return Config(f"{kind} nw=2, {context}", kind, once, once)


def run_ttfb(dataset: RandomCrops, settings: Settings) -> WorkloadResult:
    configs = [
        ttfb_config(cls, dataset, settings, context)
        for context in ("fork", "spawn")
        for cls in (TorchDataLoader, ferry.DataLoader)
    ]
    with Progress("TTFB") as progress, watching() as watch:
        rows = measure(configs, settings.tries, progress, Row)
    return WorkloadResult(
        "TTFB",
        f"time to first batch, 2 workers, the W2 dataset, batch_size {settings.batch_size}",
        rows,
        [
            "timed: constructing the loader, iter(), next(); worker shutdown is not timed",
            f"median of {settings.tries} interleaved tries after one excluded try each",
            f"under spawn each worker imports this script, torch and ferry, and receives "
            f"the dataset ({dataset.images.nbytes / 1e6:.0f} MB of images): torch pickles "
            "it into each worker's start-up pipe in turn, ferry once into a memfd that "
            "every worker reads",
        ],
        watch,
    )


# ----------------------------------------------------------------------- held batches


@dataclass(frozen=True)
class HeldResult:
    loader: str
    ok: bool
    batches: int
    seconds: float  # in the child: loader start to the last batch (or the failure)
    wall_seconds: float  # the whole child process, interpreter start-up included
    error: str | None


def held_child(loader: str, samples: int, nofile: int) -> int:
    """Runs in the child process: lower the soft fd limit, hold every batch, check the
    values, print one result line. Never raises."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))
    cls = TorchDataLoader if loader == "torch" else ferry.DataLoader
    held: list[Any] = []
    error: str | None = None
    start = time.perf_counter()
    try:
        for batch in cls(ThreeTensors(samples), batch_size=1, num_workers=2):
            held.append(batch)
        seconds = time.perf_counter() - start
        bad = [i for i, (a, b, c) in enumerate(held) if not held_batch_ok(i, a, b, c)]
        if len(held) != samples or bad:
            error = f"wrong batches: {len(held)} of {samples} held, {len(bad)} with wrong values"
    except Exception as exc:  # the point of this row is to report the failure
        seconds = time.perf_counter() - start
        error = first_line(f"{type(exc).__name__}: {exc}")
    result = {"ok": error is None, "batches": len(held), "seconds": seconds, "error": error}
    print(HELD_CHILD_RESULT + json.dumps(result), flush=True)
    return 0


def held_batch_ok(i: int, a: Tensor, b: Tensor, c: Tensor) -> bool:
    return bool((a == i).all()) and float(b) == float(i) and bool((c == torch.arange(3) + i).all())


def first_line(text: str) -> str:
    return next((line for line in text.strip().splitlines() if line.strip()), text)[:200]


def run_held_child(loader: str, settings: Settings) -> HeldResult:
    cmd = [
        sys.executable,
        "-m",
        "ferry.bench.workers",
        "--held-child",
        loader,
        "--held-samples",
        str(settings.held_samples),
        "--nofile",
        str(settings.nofile),
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=settings.held_timeout_s)
    except subprocess.TimeoutExpired:
        wall = time.perf_counter() - start
        return HeldResult(loader, False, 0, wall, wall, f"timed out after {wall:.0f} s (killed)")
    wall = time.perf_counter() - start
    line = next((x for x in proc.stdout.splitlines() if x.startswith(HELD_CHILD_RESULT)), None)
    if line is None:  # the child died before it could report
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        return HeldResult(
            loader, False, 0, wall, wall, f"child exit code {proc.returncode}: {tail[0][:200]}"
        )
    r = json.loads(line[len(HELD_CHILD_RESULT) :])
    return HeldResult(loader, r["ok"], r["batches"], r["seconds"], wall, r["error"])


def run_held(settings: Settings) -> list[HeldResult]:
    results = []
    with Progress("HELD", 2) as progress:
        for loader in ("torch", "ferry"):
            progress.step(f"{loader} nw=2, bs 1, in a child process")
            results.append(run_held_child(loader, settings))
    return results


# ----------------------------------------------------------------------------- report


def print_header(info: dict[str, Any], settings: Settings) -> None:
    print("ferry process-workers benchmark")
    print(
        f"  machine : {info['cpu']}, {info['nproc']} cpus, {info['memory_gib']} GiB, "
        f"{info['platform']}"
    )
    print(
        f"  versions: Python {info['python']}, torch {info['torch']} "
        f"({info['torch_threads']} intra-op threads in the main process, 1 in workers; "
        f"sharing strategy {info['torch_sharing_strategy']}), numpy {info['numpy']}, "
        f"ferry {info['ferry']}"
    )
    print(f"  ferry.backend_info(): {info['ferry_backend']}")
    print(
        f"  load average at start: {loadavg(info['loadavg_start'])} "
        "(1/5/15 min; other work on the machine skews the figures)"
    )
    mode = "--quick, " if settings.quick else ""
    print(
        f"  settings: {mode}workloads {','.join(settings.workloads)}, "
        f"batch_size {settings.batch_size}, shuffle=True (generator seed {settings.seed}), "
        f"default start method ({torch.multiprocessing.get_start_method()}) unless named; "
        f"throughput: median of {settings.repeats} interleaved run(s) after 1 warm-up "
        f"({settings.warmup_batches} batches); TTFB: median of {settings.tries} tries; "
        f"held batches: soft RLIMIT_NOFILE {settings.nofile}; time.perf_counter"
    )
    print()


def print_throughput_table(results: Sequence[WorkloadResult]) -> None:
    head = (
        f"{'workload':<8} | {'loader':<36} | {'samples/s':>11} | {'spread':>6} | "
        f"{'vs best torch':>13}"
    )
    print(head)
    print("-" * len(head))
    for res in results:
        torch_best = res.best("torch")
        for r in res.rows:
            vs = f"{r.median / torch_best.median:.2f}x" if torch_best else "-"
            print(
                f"{res.name:<8} | {r.name:<36} | {r.median:>11,.0f} | {r.spread_pct:>5.0f}% | "
                f"{vs:>13}"
            )
        print("-" * len(head))


def print_ttfb_table(res: WorkloadResult) -> None:
    head = (
        f"{'workload':<8} | {'loader':<36} | {'median ms':>9} | {'min ms':>7} | {'max ms':>7} | "
        f"{'vs torch':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in res.rows:
        torch_row = res.row(r.name.replace("ferry", "torch"))
        vs = f"{r.median_seconds / torch_row.median_seconds:.2f}x" if torch_row else "-"
        secs = [x.seconds for x in r.runs]
        print(
            f"{res.name:<8} | {r.name:<36} | {1e3 * r.median_seconds:>9.1f} | "
            f"{1e3 * min(secs):>7.1f} | {1e3 * max(secs):>7.1f} | {vs:>8}"
        )
    print("-" * len(head))


def first_sentence(text: str) -> str:
    return text.split(". ", 1)[0]


def print_held_table(results: Sequence[HeldResult], settings: Settings) -> None:
    head = f"{'workload':<8} | {'loader':<36} | {'time s':>6} | {'child s':>7} | result"
    print(head)
    print("-" * (len(head) + 50))
    for h in results:
        if h.ok:
            result = f"ok, {h.batches:,} batches held, values checked"
        else:
            result = f"FAILED after {h.batches:,} batches: {first_sentence(h.error or '')}"
        print(
            f"{'HELD':<8} | {f'{h.loader} nw=2, bs 1, nofile {settings.nofile}':<36} | "
            f"{h.seconds:>6.2f} | {h.wall_seconds:>7.2f} | {result}"
        )
    print("-" * (len(head) + 50))


def goal(met: bool) -> str:
    return "met" if met else "NOT met"


def throughput_summary(res: WorkloadResult) -> dict[str, Any]:
    torch_best, serial = res.best("torch"), res.row("torch nw=0")
    assert torch_best is not None and serial is not None
    print(f"{res.name}: {res.title}")
    print(f"  best torch: {torch_best.name} ({torch_best.median:,.0f} samples/s)")
    # Two workers can at best do torch nw=0's work on min(2, cores) cores at once.
    cores = min(2, len(os.sched_getaffinity(0)))
    bound = cores * serial.median
    print(
        f"  perfect 2-worker scaling: {cores} x torch nw=0 = {bound:,.0f} samples/s "
        f"({bound / torch_best.median:.2f}x best torch; worker start-up and the main "
        "process's share not counted)"
    )
    torch_rows = [r for r in res.rows if r.kind == "torch"]
    out: dict[str, Any] = {"best_torch": torch_best.name, "perfect_scaling": bound}
    for f in (r for r in res.rows if r.kind == "ferry"):
        vs = f.median / torch_best.median
        line = f"  {f.name}: {vs:.2f}x best torch"
        if f.name == "ferry nw=2":
            whose = "goal" if res.name == "W2" else "W2's goal"
            line += f" ({whose} >= {W2_GOAL_VS_TORCH}x: {goal(vs >= W2_GOAL_VS_TORCH)})"
            line += f", {100 * f.median / bound:.0f}% of perfect scaling"
        each = ", ".join(f"/ {t.name} = {f.median / t.median:.2f}x" for t in torch_rows)
        print(f"{line}; {each}")
        out[f.name] = {
            "vs_best_torch": vs,
            "vs_each_torch": {t.name: f.median / t.median for t in torch_rows},
            "pct_of_perfect_scaling": 100 * f.median / bound,
        }
    return out


def ttfb_summary(res: WorkloadResult) -> dict[str, Any]:
    print(f"{res.name}: {res.title}")
    out: dict[str, Any] = {}
    for f in (r for r in res.rows if r.kind == "ferry"):
        t = res.row(f.name.replace("ferry", "torch"))
        assert t is not None
        ratio = f.median_seconds / t.median_seconds
        met = f.median_seconds <= t.median_seconds
        print(
            f"  {f.name}: {1e3 * f.median_seconds:.1f} ms vs torch {1e3 * t.median_seconds:.1f} "
            f"ms = {ratio:.2f}x (goal ferry <= torch: {goal(met)})"
        )
        out[f.name] = {"ferry_s": f.median_seconds, "torch_s": t.median_seconds, "goal_met": met}
    return out


def held_summary(results: Sequence[HeldResult], settings: Settings) -> dict[str, Any]:
    by = {h.loader: h for h in results}
    print(
        f"HELD: {settings.held_samples:,} batches of bs 1 (three tensors each) all kept, "
        f"2 workers, soft RLIMIT_NOFILE {settings.nofile}"
    )
    ferry_ok, torch_ok = by["ferry"].ok, by["torch"].ok
    print(
        f"  torch: {'ok' if torch_ok else 'failed'}; ferry: {'ok' if ferry_ok else 'failed'} "
        f"(goal ferry works: {goal(ferry_ok)})"
    )
    for h in results:
        if not h.ok:
            print(f"  {h.loader}'s error: {h.error}")
    if torch_ok:
        print("  torch did not fail at this limit: lower --nofile to show the difference")
    return {h.loader: asdict(h) for h in results}


def watch_summary(results: Sequence[WorkloadResult]) -> None:
    cores = len(os.sched_getaffinity(0))
    for res in results:
        w = res.watch
        if w.other_cores is not None:
            busy = w.other_cores > BUSY_CORES
            print(
                f"{res.name}: other processes used {w.other_cores:.2f} of {cores} cores on "
                f"average while it ran{' (busy machine: figures skewed)' if busy else ''}"
            )
        for what, n in collections.Counter(w.ignored_errors).items():
            print(
                f"  {n} error(s) Python could only print ('Exception ignored'), raised while a "
                f"loader shut down, outside the timed region: {what}"
            )


def print_notes(results: Sequence[WorkloadResult], settings: Settings) -> None:
    print()
    for res in results:
        for line in res.notes:
            print(f"  note {res.name}: {line}")
        by_note: dict[str, list[str]] = {}
        for r in res.rows:
            if r.note:
                by_note.setdefault(r.note, []).append(r.name)
        for note, names in by_note.items():
            print(f"  note {res.name} / {', '.join(names)}: {note}")
        ferry_rows = [r for r in res.rows if r.name.startswith("ferry")]
        if ferry_rows:
            used = "; ".join(f"{r.name}: {','.join(r.paths)}" for r in ferry_rows)
            print(f"  note {res.name}: ferry's iterator (path) per row: {used}")
    if "HELD" in settings.workloads:
        print(
            "  note HELD: each loader runs in its own child process (subprocess, timeout "
            f"{settings.held_timeout_s:.0f} s); 'time s' = loader start to last batch or "
            "failure in the child, 'child s' = the whole child including interpreter start-up; "
            "a works-vs-fails row, not a ratio"
        )


def to_json(res: WorkloadResult, summary: dict[str, Any]) -> dict[str, Any]:
    torch_best = res.best("torch")
    rows = [
        {
            "loader": r.name,
            "kind": r.kind,
            "samples_per_s_median": r.median,
            "seconds_median": r.median_seconds,
            "runs": [asdict(x) for x in r.runs],
            "spread_pct": r.spread_pct,
            "ratio_vs_best_torch": r.median / torch_best.median if torch_best else None,
            "note": r.note,
        }
        for r in res.rows
    ]
    return {
        "title": res.title,
        "notes": res.notes,
        "rows": rows,
        "summary": summary,
        "other_processes_cores": res.watch.other_cores,
        "ignored_errors": res.watch.ignored_errors,
    }


# ------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer runs and tries (< 45 s)")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    p.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {','.join(WORKLOADS)}"
    )
    p.add_argument("--repeats", type=int, help="measured epochs per config (default 9, quick 2)")
    p.add_argument("--tries", type=int, help="time-to-first-batch tries (default 5, quick 2)")
    p.add_argument(
        "--nofile",
        type=int,
        default=256,
        help="soft RLIMIT_NOFILE for the held-batches children (default 256)",
    )
    p.add_argument("--held-child", choices=("torch", "ferry"), help=argparse.SUPPRESS)
    p.add_argument(
        "--held-samples", type=int, default=Settings.held_samples, help=argparse.SUPPRESS
    )
    return p.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so workers are shut down


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.held_child:
        return held_child(args.held_child, args.held_samples, args.nofile)
    settings = Settings.from_args(args)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    np.random.seed(settings.seed)  # the nw=0 loaders draw from this process's generator
    start = time.perf_counter()
    info = machine_info()
    print_header(info, settings)
    plain = RandomCrops(settings.images, settings.seed)
    throughput: list[WorkloadResult] = []
    if "W2" in settings.workloads:
        throughput.append(run_throughput("W2", plain, settings))
    if "W2-DICT" in settings.workloads:
        as_dicts = RandomCropsDict(settings.images, settings.seed)
        throughput.append(run_throughput("W2-dict", as_dicts, settings))
        del as_dicts
    ttfb = run_ttfb(plain, settings) if "TTFB" in settings.workloads else None
    held = run_held(settings) if "HELD" in settings.workloads else None

    if throughput:
        print_throughput_table(throughput)
    if ttfb is not None:
        print_ttfb_table(ttfb)
    if held is not None:
        print_held_table(held, settings)
    print()
    out: dict[str, Any] = {r.name: to_json(r, throughput_summary(r)) for r in throughput}
    if ttfb is not None:
        out["TTFB"] = to_json(ttfb, ttfb_summary(ttfb))
    if held is not None:
        out["HELD"] = held_summary(held, settings)
    watched = [*throughput, *([ttfb] if ttfb else [])]
    watch_summary(watched)
    print_notes(watched, settings)
    wall = time.perf_counter() - start
    info["loadavg_end"] = os.getloadavg()
    print(f"\ntotal wall time {wall:.1f} s; load average at end: {loadavg(info['loadavg_end'])}")
    if args.json:
        doc = {"machine": info, "settings": asdict(settings), "workloads": out, "wall_s": wall}
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
