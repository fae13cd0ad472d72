"""The bench framework that every workload module uses.

A `Workload` is a name, one line on what it measures, its runs per config, why it cannot
run on this machine (if so) and `run(settings, progress) -> Result`. `run` builds its
`Config`s (a loader or a baseline, and how to time one pass of it: `loader_config` for
a fresh loader per pass), times them with `measure()` (interleaved, after one warm-up
each) and returns a `Result`: the rows, its title, notes, the columns its table shows and
its figures against its goals (`summarize`). `main()` parses the command line, prints the
machine and versions once, runs the chosen workloads and prints their tables, summaries
and notes, writes the JSON and draws the plot.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader as TorchDataLoader

import ferry

BATCH_SIZE = 256  # of every standard workload unless --batch-size says otherwise
BUSY_CORES = 0.1  # other processes' average CPU use above which a workload is flagged

# ----------------------------------------------------------------------- runs and rows


@dataclass(frozen=True)
class Run:
    """One measured pass: samples delivered and seconds; for a training loop its steps and
    the seconds it was blocked fetching batches; which iterator served it."""

    samples: int
    seconds: float
    steps: int = 0
    wait_s: float = 0.0
    path: str = ""  # ferry's producer ("workers", ...), torch's iterator class, or ""
    cpu_s: float = 0.0  # CPU seconds of the process and its workers (shutdown included)


@dataclass
class Row:
    """A config's measured runs; holds no loader or data, so those can go."""

    name: str
    kind: str  # "torch" | "ferry" | "ceiling" | "reference"
    note: str = ""
    runs: list[Run] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # more figures, into the JSON

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
    def step_ms(self) -> float:
        return 1e3 * statistics.median(r.seconds / max(1, r.steps) for r in self.runs)

    @property
    def stall_pct(self) -> float:
        return 100.0 * statistics.median(r.wait_s / r.seconds for r in self.runs)

    @property
    def paths(self) -> list[str]:
        return sorted({r.path for r in self.runs if r.path})


@dataclass
class Config:
    """One thing to time: `run()` does one measured pass; `warm_up()` the excluded pass
    before the first one."""

    name: str
    kind: str
    run: Callable[[], Run]
    warm_up: Callable[[], object]
    note: str = ""


def measure(configs: Sequence[Config], repeats: int, progress: Progress) -> list[Row]:
    """Warm-up for each config, then `repeats` rounds, configs interleaved in each (so that
    drift hits every config alike); the progress line steps between passes, outside the
    timed regions."""
    rows = [Row(c.name, c.kind, c.note) for c in configs]
    progress.add(len(configs) * (1 + repeats))
    for cfg in configs:
        progress.step(f"{cfg.name}, warm-up")
        cfg.warm_up()
    for r in range(repeats):
        for cfg, row in zip(configs, rows, strict=True):
            progress.step(f"{cfg.name}, run {r + 1}/{repeats}")
            gc.collect()
            row.runs.append(cfg.run())
    return rows


def touch(batch: Any) -> int:
    """Reads one element of every tensor in the batch (a tensor, tuple, list or dict), so
    that it is materialised; returns its sample count. Nothing is kept."""
    leaves = [batch] if isinstance(batch, Tensor) else batch
    leaves = list(leaves.values()) if isinstance(leaves, Mapping) else leaves
    for leaf in leaves:
        if isinstance(leaf, Tensor) and leaf.numel():
            int(leaf.reshape(-1)[-1])
    return len(leaves[0])


def iterator_path(it: object) -> str:
    """Which of ferry's producers serves an iterator, or torch's iterator class."""
    return str(getattr(it, "path", type(it).__name__))


def time_epoch(loader: Iterable[Any], max_batches: int | None) -> Run:
    """Iterates `loader` for an epoch (or `max_batches`). iter() is inside the timed
    region: worker start-up is paid every epoch unless workers persist."""
    samples = 0
    cpu_before = process_cpu_s()
    start = time.perf_counter()
    it = iter(loader)
    path = iterator_path(it)
    for i, batch in enumerate(it):
        samples += touch(batch)
        if max_batches is not None and i + 1 >= max_batches:
            break
    elapsed = time.perf_counter() - start
    del it  # shutdown (workers joined) outside the timed region
    return Run(samples, elapsed, path=path, cpu_s=process_cpu_s() - cpu_before)


def process_cpu_s() -> float:
    """CPU seconds of this process (all its threads) and its reaped children (workers
    that were joined); the process's own clock has nanoseconds, os.times() only ticks."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def kind_of(cls: type) -> str:
    return "torch" if cls is TorchDataLoader else "ferry"


def loader_kwargs(settings: Settings, workers: int, **extra: Any) -> dict[str, Any]:
    """Shuffled batches of the settings' size, each loader with its own equal generator."""
    return {
        "batch_size": settings.batch_size,
        "shuffle": True,
        "num_workers": workers,
        "generator": torch.Generator().manual_seed(settings.seed),
        **extra,
    }


def loader_config(
    name: str,
    kind: str,
    make: Callable[[], Iterable[Any]],
    warmup_batches: int,
    max_batches: int | None = None,
    note: str = "",
) -> Config:
    """A fresh loader per pass, as a training loop without persistent workers sees it."""
    return Config(
        name,
        kind,
        run=lambda: time_epoch(make(), max_batches),
        warm_up=lambda: time_epoch(make(), warmup_batches),
        note=note,
    )


# -------------------------------------------------------------- workloads and results


@dataclass(frozen=True)
class Column:
    """A column of a workload's table, and the same figure in its JSON rows."""

    head: str
    key: str
    value: Callable[[Row, Result], Any]  # a number, a text, or None where it does not apply
    fmt: str = ""
    suffix: str = ""
    width: int = 0

    def text(self, row: Row, res: Result) -> str:
        v = self.value(row, res)
        text = "-" if v is None else v if isinstance(v, str) else f"{v:{self.fmt}}{self.suffix}"
        return f"{text:>{max(self.width, len(self.head))}}"


SAMPLES_S = Column("samples/s", "samples_per_s_median", lambda r, _: r.median, ",.0f", width=11)
SPREAD = Column("spread", "spread_pct", lambda r, _: r.spread_pct, ".0f", "%")
VS_BEST_TORCH = Column(
    "vs best torch", "ratio_vs_best_torch", lambda r, res: res.vs_best_torch(r), ".2f", "x"
)
PCT_CEILING = Column(
    "% of ceiling", "pct_of_ceiling", lambda r, res: res.pct_of_ceiling(r), ".1f", "%"
)
THROUGHPUT = (SAMPLES_S, SPREAD, VS_BEST_TORCH)
WITH_CEILING = (*THROUGHPUT, PCT_CEILING)


@dataclass
class Result:
    """What a workload measured, and what the report shows of it."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    columns: Sequence[Column] = THROUGHPUT
    summary: dict[str, Any] = field(default_factory=dict)  # figures against goals (JSON)
    lines: list[str] = field(default_factory=list)  # the same for people
    extra: dict[str, Any] = field(default_factory=dict)  # more of its JSON
    skipped: str | None = None  # why it did not run
    watch: Watch | None = None

    def best(self, kind: str) -> Row | None:
        of_kind = [r for r in self.rows if r.kind == kind]
        return max(of_kind, key=lambda r: r.median) if of_kind else None

    def row(self, name: str) -> Row | None:
        return next((r for r in self.rows if r.name == name), None)

    def vs_best_torch(self, row: Row) -> float | None:
        best = self.best("torch")
        return row.median / best.median if best else None

    def pct_of_ceiling(self, row: Row) -> float | None:
        ceiling = self.best("ceiling")
        return 100 * row.median / ceiling.median if ceiling else None

    def summarize(self, line: str, **figures: Any) -> None:
        """A line of the summary; its `figures` go into the JSON summary under the line's
        label (what precedes its first ':', e.g. the row's name)."""
        self.lines.append(line)
        if figures:
            self.summary[line.split(":", 1)[0].strip()] = figures


def goal(met: bool) -> str:
    return "met" if met else "NOT met"


def runs_anywhere(settings: Settings) -> str | None:
    return None


def runs(default: int, quick: int) -> Callable[[Settings], int]:
    """Measured runs per config: --repeats, else `default` (`quick` with --quick)."""
    return lambda s: s.args.repeats or (quick if s.quick else default)


@dataclass(frozen=True)
class Workload:
    """What `python -m ferry.bench` needs to know of a workload."""

    name: str
    about: str  # one line for --help
    run: Callable[[Settings, Progress], Result]
    repeats: Callable[[Settings], int] = runs(3, 1)  # measured runs per config
    cannot_run: Callable[[Settings], str | None] = runs_anywhere  # why not here, or None
    options: Callable[[argparse._ArgumentGroup], None] | None = None  # its own arguments


@dataclass(frozen=True)
class Settings:
    """The command line, as every workload reads it (its own options are in `args`)."""

    quick: bool
    repeats: int  # of the workload being run: --repeats or its own default
    seed: int
    batch_size: int
    workloads: tuple[Workload, ...]
    args: argparse.Namespace

    @property
    def warmup_batches(self) -> int:
        return 5 if self.quick else 10


# ------------------------------------------------------------------ what else happened


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


def first_line(text: str) -> str:
    return next((line for line in text.strip().splitlines() if line.strip()), text)[:200]


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = float("nan")
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024**2
    return {
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_gb, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_sharing_strategy": torch.multiprocessing.get_sharing_strategy(),
        "numpy": np.__version__,
        "ferry": ferry.__version__,
        "ferry_backend": ferry.backend_info(),
        "nofile_limits": resource.getrlimit(resource.RLIMIT_NOFILE),
        "loadavg_start": os.getloadavg(),
    }


def loadavg(avg: Sequence[float]) -> str:
    return " ".join(f"{a:.2f}" for a in avg)


class Progress:
    """One progress line per workload, on stderr: which pass runs (the loader or config and
    its run), as step k of n, and a bar.

    On a terminal the line is redrawn in place ('\\r') at most every `tty_interval_s`; in
    a log (not a terminal) a plain line is written at most every `log_interval_s`, and one
    at the end, so logs stay readable. Callers step it between measured passes, never
    inside one, so it costs the figures nothing. Not thread-safe: one caller."""

    BAR = 20

    def __init__(
        self,
        workload: str,
        total: int = 0,
        stream: TextIO | None = None,
        tty_interval_s: float = 0.1,
        log_interval_s: float = 30.0,
    ) -> None:
        self.workload = workload
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.interval_s = tty_interval_s if self.tty else log_interval_s
        self.k = 0  # the pass now running, 1-based; 0 before the first
        self.label = ""
        self.start = time.monotonic()
        # A terminal shows the first step at once; a log waits an interval for its first line.
        self._last_draw = -float("inf") if self.tty else self.start

    def add(self, steps: int) -> None:
        """More passes to come (known only once a workload's configs are built)."""
        self.total += steps

    def step(self, label: str) -> None:
        """The next pass begins: the previous one is done."""
        self.k += 1
        self.total = max(self.total, self.k)
        self.label = label
        now = time.monotonic()
        if now - self._last_draw >= self.interval_s:  # a skipped step shows at the next one
            self._draw(now)

    def line(self, now: float) -> str:
        done = self.k - 1 if self.k else 0
        filled = round(self.BAR * done / self.total) if self.total else 0
        bar = "#" * filled + "-" * (self.BAR - filled)
        width = len(str(self.total))
        return (
            f"{self.workload:<8} [{bar}] {self.k:>{width}}/{self.total} {self.label} "
            f"({now - self.start:.0f} s)"
        )

    def _draw(self, now: float) -> None:
        self._last_draw = now
        text = self.line(now)
        if self.tty:
            cols = shutil.get_terminal_size((100, 24)).columns
            self.stream.write(f"\r\033[K{text[: max(10, cols - 1)]}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, error: BaseException | None = None) -> None:
        """The final line: how many passes, in how long (or where it stopped)."""
        elapsed = time.monotonic() - self.start
        if error is None:
            text = f"{self.workload:<8} done: {self.k} passes in {elapsed:.1f} s"
        else:
            text = (
                f"{self.workload:<8} stopped in pass {self.k}/{self.total} ({self.label}) "
                f"after {elapsed:.1f} s: {type(error).__name__}"
            )
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(exc)


# ------------------------------------------------------------------------------ report


def print_header(info: dict[str, Any], settings: Settings, repeats: Mapping[str, int]) -> None:
    print("ferry.DataLoader against torch.utils.data.DataLoader, side by side in one process")
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
    runs = ", ".join(f"{name} {r}" for name, r in repeats.items())
    print(
        f"  settings: {'--quick, ' if settings.quick else ''}batch_size {settings.batch_size}, "
        f"shuffle=True (generator seed {settings.seed}), default start method "
        f"({torch.multiprocessing.get_start_method()}) unless named; each config: one "
        f"excluded warm-up pass ({settings.warmup_batches} batches), then the median of R "
        f"interleaved runs (R: {runs}); time.perf_counter"
    )
    print()


def print_tables(results: Sequence[Result]) -> None:
    """One table per run of consecutive workloads that show the same columns."""
    head = ""
    for res in results:
        cells = [f"{c.head:>{max(c.width, len(c.head))}}" for c in res.columns]
        this = " | ".join([f"{'workload':<8}", f"{'loader':<40}", *cells])
        if res.skipped is not None:
            this = f"{'workload':<8} | result"
        if this != head:
            print(f"\n{this}" if head else this)
            head = this
            print("-" * max(len(head), 72))
        if res.skipped is not None:
            print(f"{res.name:<8} | skipped: {res.skipped}")
        for row in res.rows:
            print(" | ".join([f"{res.name:<8}", f"{row.name:<40}",
                              *(c.text(row, res) for c in res.columns)]))
        print("-" * max(len(head), 72))


def print_summaries(results: Sequence[Result]) -> None:
    print()
    for res in results:
        if res.skipped is None:
            print(f"{res.name}: {res.title}")
        for line in res.lines:
            print(line)
    cores = len(os.sched_getaffinity(0))
    for res in results:
        w = res.watch
        if w is not None and w.other_cores is not None:
            busy = " (busy machine: figures skewed)" if w.other_cores > BUSY_CORES else ""
            print(
                f"{res.name}: other processes used {w.other_cores:.2f} of {cores} cores on "
                f"average while it ran{busy}"
            )
        for what, n in Counter(w.ignored_errors if w else []).items():
            print(
                f"  {n} error(s) Python could only print ('Exception ignored'), raised while a "
                f"loader shut down, outside the timed region: {what}"
            )
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
        used = [f"{r.name}: {','.join(r.paths)}" for r in res.rows if r.kind == "ferry" and r.paths]
        if used:
            print(f"  note {res.name}: ferry's iterator (path) per row: {'; '.join(used)}")


def to_json(res: Result) -> dict[str, Any]:
    best, ceiling = res.best("torch"), res.best("ceiling")
    return {
        "title": res.title,
        **({"skipped": res.skipped} if res.skipped is not None else {}),
        "columns": [c.head for c in res.columns],
        "notes": res.notes,
        "rows": [
            {
                "loader": r.name,
                "kind": r.kind,
                "seconds_median": r.median_seconds,
                **{c.key: c.value(r, res) for c in res.columns},
                "runs": [asdict(x) for x in r.runs],
                "paths": r.paths,
                "note": r.note,
                **r.extra,
            }
            for r in res.rows
        ],
        "summary": res.summary,
        "best_torch": best.name if best else None,
        "ceiling": ceiling.name if ceiling else None,
        "other_processes_cores": res.watch.other_cores if res.watch else None,
        "ignored_errors": res.watch.ignored_errors if res.watch else [],
        **res.extra,
    }


def plot(doc: dict[str, Any], path: Path) -> None:
    """A bar chart of every workload's samples/s, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, [r for r in w["rows"] if r.get("samples_per_s_median")])
              for name, w in doc["workloads"].items()]
    panels = [(n, rows) for n, rows in panels if rows]
    if not panels:  # e.g. only workloads that were skipped
        print(f"nothing to plot: no workload measured samples/s, {path} not written")
        return
    height = 1.2 + 0.45 * sum(len(r) for _, r in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, height), squeeze=False)
    colors = {"ferry": "tab:orange", "torch": "tab:blue"}
    for ax, (name, rows) in zip(axes[:, 0], panels, strict=True):
        ax.barh([r["loader"] for r in rows], [r["samples_per_s_median"] for r in rows],
                color=[colors.get(r["kind"], "tab:gray") for r in rows])
        ax.set_title(name, loc="left", fontsize=10)
        ax.invert_yaxis()
        ax.set_xlabel("samples/s")
    m = doc.get("machine", {})
    fig.suptitle(f"ferry vs torch DataLoader — {m.get('cpu', '?')}, {m.get('nproc', '?')} cpus, "
                 f"torch {m.get('torch', '?')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


# --------------------------------------------------------------------- the user's dataset


def load_factory(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        sys.exit(f"--dataset takes module:factory, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    factory = getattr(importlib.import_module(module_name), attr)
    return factory() if callable(factory) else factory


def user_loaders(dataset: Any, settings: Settings) -> dict[str, Callable[[], Iterable[Any]]]:
    """Makers of torch's loader without workers, and torch's and ferry's with --num-workers,
    each with --pin-memory and its own generator seeded with --seed (so they shuffle alike)."""
    args = settings.args
    configs = [(TorchDataLoader, 0), (TorchDataLoader, args.num_workers),
               (ferry.DataLoader, args.num_workers)]
    extra = {"pin_memory": args.pin_memory}
    return {
        f"{kind_of(cls)} nw={nw}": lambda cls=cls, nw=nw: cls(
            dataset, **loader_kwargs(settings, nw, **extra))
        for cls, nw in dict.fromkeys(configs)
    }


def run_user_dataset(settings: Settings, progress: Progress) -> Result:
    dataset = load_factory(settings.args.dataset)
    configs = [loader_config(name, name.split()[0], make, settings.warmup_batches)
               for name, make in user_loaders(dataset, settings).items()]
    res = Result(
        "dataset",
        f"{settings.args.dataset}: {len(dataset):,} samples, batch_size {settings.batch_size}, "
        f"pin_memory={settings.args.pin_memory}",
        measure(configs, settings.repeats, progress),
        ["each run is one full epoch of a fresh loader, worker start-up included"],
    )
    for row in (r for r in res.rows if r.kind == "ferry"):
        vs = res.vs_best_torch(row)
        res.summarize(f"  {row.name}: {vs:.2f}x best torch", vs_best_torch=vs)
    return res


def user_dataset(args: argparse.Namespace) -> Workload:
    return Workload("dataset", f"your dataset, {args.dataset}", run_user_dataset)


# ------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None, workloads: Sequence[Workload]) -> argparse.Namespace:
    names = ",".join(w.name for w in workloads)
    p = argparse.ArgumentParser(
        prog="python -m ferry.bench",
        description=sys.modules[__package__].__doc__,
        epilog="workloads:\n" + "\n".join(f"  {w.name:<8} {w.about}" for w in workloads),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smaller workloads, fewer runs")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    p.add_argument("--plot", type=Path, help="draw a bar chart to this PNG (needs matplotlib)")
    p.add_argument("--workloads", default=names, help=f"comma-separated, of {names}")
    p.add_argument("--repeats", type=int,
                   help="measured runs per config (default: each workload's own, fewer with "
                   "--quick; the header says how many)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the equal torch.Generator each loader shuffles with (default 0)")
    p.add_argument("--batch-size", type=int,
                   help=f"batch size (default {BATCH_SIZE}; with --dataset 64)")
    mine = p.add_argument_group("your own dataset, instead of the workloads")
    mine.add_argument("--dataset", help="module:factory returning your dataset: benchmark it")
    mine.add_argument("--num-workers", type=int, default=2, help="ferry's and torch's (default 2)")
    mine.add_argument("--pin-memory", action="store_true", help="pin_memory=True in each loader")
    by_options: dict[Callable[[argparse._ArgumentGroup], None], list[str]] = {}
    for w in workloads:
        if w.options is not None:
            by_options.setdefault(w.options, []).append(w.name)
    for options, names in by_options.items():
        options(p.add_argument_group(", ".join(names)))
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def settings_from(args: argparse.Namespace, workloads: Sequence[Workload]) -> Settings:
    if args.dataset:
        chosen: tuple[Workload, ...] = (user_dataset(args),)
    else:
        by_name = {w.name.upper(): w for w in workloads}
        wanted = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(by_name))
        if unknown:
            sys.exit(f"unknown workloads {unknown}; choose from "
                     f"{', '.join(w.name for w in workloads)}")
        chosen = tuple(w for w in workloads if w.name.upper() in wanted)
    batch_size = args.batch_size or (64 if args.dataset else BATCH_SIZE)
    return Settings(args.quick, 0, args.seed, batch_size, chosen, args)


def run_workload(w: Workload, settings: Settings) -> Result:
    settings = replace(settings, repeats=w.repeats(settings))
    why_not = w.cannot_run(settings)
    if why_not is not None:
        hint = f"run it where it can run: python -m ferry.bench --workloads {w.name}"
        return Result(w.name, w.about, notes=[hint], columns=(), skipped=why_not)
    with Progress(w.name) as progress, watching() as watch:
        res = w.run(settings, progress)
    # watching()'s gc pass ended the configs' loaders (persistent workers too)
    res.watch = watch
    return res


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: workers shut down, temp files are deleted


def main(workloads: Sequence[Workload], argv: Sequence[str] | None = None) -> int:
    """Runs the chosen `workloads` (in their order) and reports them."""
    args = parse_args(argv, workloads)
    settings = settings_from(args, workloads)
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.exit("--plot needs matplotlib, which is not installed: pip install matplotlib")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    start = time.perf_counter()
    info = machine_info()
    print_header(info, settings, {w.name: w.repeats(settings) for w in settings.workloads})
    results = [run_workload(w, settings) for w in settings.workloads]
    print_tables(results)
    print_summaries(results)
    wall = time.perf_counter() - start
    info["loadavg_end"] = os.getloadavg()
    print(f"\ntotal wall time {wall:.1f} s; load average at end: {loadavg(info['loadavg_end'])}")
    doc = {
        "machine": info,
        "settings": {"quick": settings.quick, "seed": settings.seed,
                     "batch_size": settings.batch_size, "args": vars(args)},
        "workloads": {r.name: to_json(r) for r in results},
        "wall_s": wall,
        "loadavg_end": loadavg(info["loadavg_end"]),
    }
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {args.json}")
    if args.plot:
        plot(doc, args.plot)
    return 0
