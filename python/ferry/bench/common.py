"""What every benchmark shares: the machine and the versions printed beside its figures,
and the progress line shown while a workload runs."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO, TypeVar

import numpy as np
import torch

import ferry


@dataclass
class Config:
    """One thing to time: `run()` does one measured pass (and returns its figures);
    `warm_up()` does the excluded pass before the first one."""

    name: str
    kind: str  # "torch" | "ferry" | "ceiling" | "reference"
    run: Callable[[], Any]
    warm_up: Callable[[], object]
    note: str = ""


R = TypeVar("R")


def measure(configs: Sequence[Config], repeats: int, progress: Progress,
            row: Callable[[str, str, str], R]) -> list[R]:
    """Warm-up for each config, then `repeats` rounds, configs interleaved in each; the
    progress line steps between passes, outside the timed regions. `row(name, kind, note)`
    makes each config's row, whose `runs` list gets one entry per measured pass."""
    rows = [row(c.name, c.kind, c.note) for c in configs]
    progress.add(len(configs) * (1 + repeats))
    for cfg in configs:
        progress.step(f"{cfg.name}, warm-up")
        cfg.warm_up()
    for r in range(repeats):
        for cfg, one in zip(configs, rows, strict=True):
            progress.step(f"{cfg.name}, run {r + 1}/{repeats}")
            gc.collect()
            one.runs.append(cfg.run())  # type: ignore[attr-defined]
    return rows


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
