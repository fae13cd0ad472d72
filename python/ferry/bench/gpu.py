#!/usr/bin/env python3
"""ferry's batches on a CUDA device against torch.utils.data.DataLoader, same process.

H2D:   W1 (a TensorDataset of uint8 3x32x32 images + int64 labels, batch 256, shuffled)
       delivered on the device: ferry.DataLoader(device="cuda") and torch's
       DataLoader(pin_memory=True) + .to(device, non_blocking=True), against a ceiling
       measured in the same run: copy_(non_blocking=True) of the same bytes, batch by
       batch, from a pinned host buffer into a device buffer, synchronized at the end.
TRAIN: a small conv net trained with SGD on those batches, fed by ferry (device="cuda",
       ferry's default workers) and by torch's DataLoader(pin_memory=True, num_workers=2)
       + .to(device, non_blocking=True): step time, data stall share (time blocked
       fetching the next batch / loop time) and the ratio between the two.

Without a CUDA device both are reported as skipped, with the reason. `--on-cpu` (or
FERRY_BENCH_GPU_ON_CPU=1) runs the same code with device="cpu" and tiny sizes, so that a
machine without a GPU exercises it; those figures mean nothing.

    python -m ferry.bench --workloads H2D,TRAIN [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import TensorDataset

import ferry

from .common import Config, Progress, loadavg, machine_info, measure
from .native import random_images

WORKLOADS = ("H2D", "TRAIN")
ON_CPU_ENV = "FERRY_BENCH_GPU_ON_CPU"
NUM_CLASSES = 10
CEILING_INNER = 5
H2D_GOAL_PCT_CEILING = 90.0
TRAIN_GOAL_STALL_PCT = 2.0
FERRY_DEFAULTS_NOTE = (
    "ferry.DataLoader(..., device=) with its defaults (num_workers=0): on a TensorDataset "
    "the native path, with ferry.backend_info()['native_threads_default'] C++ threads"
)


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int
    workloads: tuple[str, ...]
    device: str  # "cuda", or "cpu" for the stand-in run
    images: int = 100_000
    batch_size: int = 256
    train_batches: int | None = None  # per TRAIN run; None: a full epoch
    torch_workers: int = 2
    warmup_batches: int = 10
    seed: int = 0

    @property
    def stand_in(self) -> bool:
        return self.device == "cpu"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        workloads = tuple(w.strip().upper() for w in args.workloads.split(",") if w.strip())
        unknown = sorted(set(workloads) - set(WORKLOADS))
        if unknown:
            raise SystemExit(f"unknown workload(s) {unknown}; choose from {','.join(WORKLOADS)}")
        if args.repeats is not None and args.repeats < 1:
            raise SystemExit("--repeats must be >= 1")
        if on_cpu_requested(args.on_cpu):  # exercises the code only: tiny and one run
            return cls(
                args.quick,
                args.repeats or 1,
                workloads,
                "cpu",
                images=1_024,
                batch_size=64,
                train_batches=8,
                warmup_batches=2,
            )
        repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
        if args.quick:
            return cls(True, repeats, workloads, "cuda", images=20_000, warmup_batches=5)
        return cls(False, repeats, workloads, "cuda")


def on_cpu_requested(flag: bool) -> bool:
    return flag or os.environ.get(ON_CPU_ENV, "") not in ("", "0")


def cuda_missing() -> str | None:
    """Why the GPU workloads cannot run here, or None when they can."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"no CUDA device (torch {torch.__version__} is built without CUDA)"
    return "no CUDA device (torch.cuda.is_available() is False)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Run:
    """One measured pass: samples delivered, seconds, and for TRAIN the steps and the
    seconds the loop was blocked fetching its next batch."""

    samples: int
    seconds: float
    steps: int = 0
    wait_s: float = 0.0
    path: str = ""  # which iterator served it: ferry's producer, or torch's class


@dataclass
class Row:
    """A config's measured runs; holds no loader or data, so those can go."""

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
    def spread_pct(self) -> float:
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


Batch = Sequence[Tensor]
Fetch = Callable[[Iterator[Any]], Batch]  # next batch, on the device


def fetch_as_is(it: Iterator[Any]) -> Batch:
    return next(it)


def fetch_and_move(device: torch.device) -> Fetch:
    """torch's way: next() from a pinned loader, then .to(device, non_blocking=True)."""

    def fetch(it: Iterator[Any]) -> Batch:
        return [t.to(device, non_blocking=True) for t in next(it)]

    return fetch


def iterator_path(it: object) -> str:
    return str(getattr(it, "path", type(it).__name__))


def time_delivery(
    make: Callable[[], Iterable[Any]], fetch: Fetch, device: torch.device, max_batches: int | None
) -> Run:
    """A fresh loader's epoch (or `max_batches`) delivered on `device`, nothing computed;
    iter() (worker start-up) and the final synchronize are timed, shutdown is not."""
    loader = make()
    samples = batches = 0
    start = time.perf_counter()
    it = iter(loader)
    while max_batches is None or batches < max_batches:
        try:
            batch = fetch(it)
        except StopIteration:
            break
        samples += len(batch[0])
        batches += 1
    synchronize(device)
    elapsed = time.perf_counter() - start
    path = iterator_path(it)
    del it, loader
    return Run(samples, elapsed, batches, path=path)


def delivery_config(
    name: str,
    kind: str,
    make: Callable[[], Iterable[Any]],
    fetch: Fetch,
    device: torch.device,
    settings: Settings,
    note: str = "",
) -> Config:
    return Config(
        name,
        kind,
        run=lambda: time_delivery(make, fetch, device, None),
        warm_up=lambda: time_delivery(make, fetch, device, settings.warmup_batches),
        note=note,
    )


class Trainer:
    """A small conv net and its SGD step; one instance serves every config, so each
    does the same work per step. Not thread-safe."""

    def __init__(self, device: torch.device, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, NUM_CLASSES),
        ).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def step(self, images: Tensor, labels: Tensor) -> None:
        loss = F.cross_entropy(self.model(images.float().div_(255)), labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()  # no loss.item(): nothing in the loop waits for the device


def time_training(
    make: Callable[[], Iterable[Any]],
    fetch: Fetch,
    trainer: Trainer,
    device: torch.device,
    max_steps: int | None,
) -> Run:
    """Training steps over a fresh loader's epoch (or `max_steps`). wait_s is the time the
    loop spends in iter() (worker start-up) and fetching each batch; the final synchronize
    is in the loop's time, shutdown is not."""
    loader = make()
    samples = steps = 0
    start = time.perf_counter()
    it = iter(loader)
    wait = time.perf_counter() - start
    while max_steps is None or steps < max_steps:
        t0 = time.perf_counter()
        try:
            images, labels = fetch(it)
        except StopIteration:
            break
        wait += time.perf_counter() - t0
        trainer.step(images, labels)
        samples += len(images)
        steps += 1
    synchronize(device)
    elapsed = time.perf_counter() - start
    path = iterator_path(it)
    del it, loader
    return Run(samples, elapsed, steps, wait, path)


def training_config(
    name: str,
    kind: str,
    make: Callable[[], Iterable[Any]],
    fetch: Fetch,
    trainer: Trainer,
    device: torch.device,
    settings: Settings,
    note: str = "",
) -> Config:
    return Config(
        name,
        kind,
        run=lambda: time_training(make, fetch, trainer, device, settings.train_batches),
        warm_up=lambda: time_training(make, fetch, trainer, device, settings.warmup_batches),
        note=note,
    )


# -------------------------------------------------------------------------- workloads


def loaders(
    dataset: TensorDataset, settings: Settings, device: torch.device
) -> dict[str, Callable[..., Iterable[Any]]]:
    """Makers of fresh loaders: ferry's (device= or host only) and torch's (pinned where
    the device is CUDA), each with its own seeded generator."""
    pin = device.type == "cuda"

    def common() -> dict[str, Any]:
        return {
            "batch_size": settings.batch_size,
            "shuffle": True,
            "generator": torch.Generator().manual_seed(settings.seed),
        }

    return {
        "ferry": lambda: ferry.DataLoader(dataset, **common(), device=device),
        "ferry host": lambda: ferry.DataLoader(dataset, **common()),
        "torch": lambda nw: TorchDataLoader(dataset, **common(), num_workers=nw, pin_memory=pin),
    }


def copy_configs(
    images: Tensor, labels: Tensor, settings: Settings, device: torch.device
) -> list[Config]:
    """The ceiling: the same bytes copied with copy_(non_blocking=True) from a pinned host
    buffer into a device buffer (cudaMemcpyAsync), per batch-sized slice and in one call
    per tensor, synchronized at the end of each pass."""
    pinned = device.type == "cuda"
    src = [t.pin_memory() if pinned else t.clone() for t in (images, labels)]
    dst = [torch.empty_like(t, device=device) for t in src]
    n = len(images)

    def pairs_of(step: int) -> list[tuple[Tensor, Tensor]]:
        return [
            (a[lo : lo + step], b[lo : lo + step])
            for lo in range(0, n, step)
            for a, b in zip(src, dst, strict=True)
        ]

    def copier(pairs: list[tuple[Tensor, Tensor]]) -> Callable[[], Run]:
        def run() -> Run:
            best = float("inf")
            for _ in range(CEILING_INNER):  # a ceiling is what a copy can reach: the best
                synchronize(device)
                start = time.perf_counter()
                for a, b in pairs:
                    b.copy_(a, non_blocking=True)
                synchronize(device)
                best = min(best, time.perf_counter() - start)
            return Run(n, best, len(pairs) // 2)

        return run

    src_name = "pinned" if pinned else "host"
    per_batch, whole = copier(pairs_of(settings.batch_size)), copier(pairs_of(n))
    return [
        Config(
            f"copy_ {src_name} -> {device.type}, per batch",
            "ceiling",
            per_batch,
            per_batch,
            note=f"{-(-n // settings.batch_size)} batch-sized slices of each tensor, "
            f"fastest of {CEILING_INNER} passes",
        ),
        Config(
            f"copy_ {src_name} -> {device.type}, one call",
            "reference",
            whole,
            whole,
            note="one copy_ per tensor (images, labels): the link's bandwidth",
        ),
    ]


def h2d_configs(settings: Settings, device: torch.device) -> list[Config]:
    images, labels = random_images(settings.images, settings.seed)
    make = loaders(TensorDataset(images, labels), settings, device)
    to_device = fetch_and_move(device)
    pin = "pin_memory" if device.type == "cuda" else "no pin_memory (CPU)"
    nw = settings.torch_workers
    return [
        delivery_config(
            f"ferry device={device.type}, default workers",
            "ferry",
            make["ferry"],
            fetch_as_is,
            device,
            settings,
            note=FERRY_DEFAULTS_NOTE,
        ),
        delivery_config(
            "ferry host only (no device=)",
            "reference",
            make["ferry host"],
            fetch_as_is,
            device,
            settings,
            note="the same loader without device=: what the host side (sampler "
            "+ gather) delivers, no copy",
        ),
        delivery_config(
            f"torch nw=0, {pin} + .to()",
            "torch",
            lambda: make["torch"](0),
            to_device,
            device,
            settings,
        ),
        delivery_config(
            f"torch nw={nw}, {pin} + .to()",
            "torch",
            lambda: make["torch"](nw),
            to_device,
            device,
            settings,
        ),
        *copy_configs(images, labels, settings, device),
    ]


def train_configs(settings: Settings, device: torch.device) -> list[Config]:
    images, labels = random_images(settings.images, settings.seed)
    make = loaders(TensorDataset(images, labels), settings, device)
    trainer = Trainer(device, settings.seed)
    pin = "pin_memory" if device.type == "cuda" else "no pin_memory (CPU)"
    nw = settings.torch_workers
    epoch = -(-settings.images // settings.batch_size)
    resident = (images[: settings.batch_size].to(device), labels[: settings.batch_size].to(device))
    steps = min(epoch, settings.train_batches or epoch)

    def same_batch() -> Iterable[Any]:
        return iter([resident] * max(steps, settings.warmup_batches))

    return [
        training_config(
            f"ferry device={device.type}, default workers",
            "ferry",
            make["ferry"],
            fetch_as_is,
            trainer,
            device,
            settings,
            note=FERRY_DEFAULTS_NOTE,
        ),
        training_config(
            f"torch nw={nw}, {pin} + .to()",
            "torch",
            lambda: make["torch"](nw),
            fetch_and_move(device),
            trainer,
            device,
            settings,
        ),
        training_config(
            "model alone, one resident batch",
            "reference",
            same_batch,
            fetch_as_is,
            trainer,
            device,
            settings,
            note="the same steps on one batch already on the device: the step "
            "time with no loader at all",
        ),
    ]


@dataclass
class WorkloadResult:
    name: str
    title: str
    rows: list[Row]
    notes: list[str]

    def best(self, kind: str) -> Row | None:
        of_kind = [r for r in self.rows if r.kind == kind]
        return max(of_kind, key=lambda r: r.median) if of_kind else None


def h2d_title(settings: Settings) -> str:
    n = settings.images
    return (
        f"W1 delivered on the device: TensorDataset, {n:,} uint8 3x32x32 images + int64 "
        f"labels ({n * 3 * 32 * 32 / 1e6:.0f} MB), batch_size {settings.batch_size}, shuffled"
    )


def train_title(settings: Settings) -> str:
    steps = "a full epoch" if settings.train_batches is None else f"{settings.train_batches}"
    return (
        f"SGD steps of a small conv net on W1 batches ({settings.images:,} images, "
        f"batch_size {settings.batch_size}), {steps} steps per run"
    )


TITLES = {"H2D": h2d_title, "TRAIN": train_title}


def run_h2d(settings: Settings, device: torch.device) -> WorkloadResult:
    with Progress("H2D") as progress:
        rows = measure(h2d_configs(settings, device), settings.repeats, progress, Row)
    return WorkloadResult(
        "H2D",
        h2d_title(settings),
        rows,
        [
            "each loader run is one epoch of a fresh loader (iter() and worker start-up "
            "included), ending with a synchronize; batches are not read on the host",
            "ceiling = copy_(non_blocking=True) of the same bytes (images+labels) from a "
            "pinned host buffer into a preallocated device buffer, per batch-sized slice "
            "(cudaMemcpyAsync), synchronized at the end",
        ],
    )


def run_train(settings: Settings, device: torch.device) -> WorkloadResult:
    with Progress("TRAIN") as progress:
        rows = measure(train_configs(settings, device), settings.repeats, progress, Row)
    return WorkloadResult(
        "TRAIN",
        train_title(settings),
        rows,
        [
            "model: 3 conv layers (32/64/128 channels, 3x3) with ReLU and max-pool, global "
            "average pool, linear; SGD lr 0.01 momentum 0.9; x.float()/255 on the device; "
            "cross-entropy; no loss.item() in the loop",
            "stall = time in iter() and in fetching each batch (next(), plus .to() for "
            "torch) / the loop's time, by time.perf_counter with no synchronize inside "
            "the loop; while the device's queue is ahead part of that wait is hidden, so "
            "it bounds the device's idle time from above",
            "every run uses a fresh loader (no persistent_workers), worker start-up included",
        ],
    )


def device_info(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"device": "cpu", "stand_in": True}
    props = torch.cuda.get_device_properties(device)
    return {
        "device": str(device),
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 1024**3, 1),
        "device_count": torch.cuda.device_count(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def print_header(info: dict[str, Any], settings: Settings) -> None:
    print("ferry device-delivery benchmark")
    print(
        f"  machine : {info['cpu']}, {info['nproc']} cpus, {info['memory_gib']} GiB, "
        f"{info['platform']}"
    )
    print(
        f"  versions: Python {info['python']}, torch {info['torch']} "
        f"({info['torch_threads']} intra-op threads), ferry {info['ferry']}"
    )
    print(f"  device  : {info['device']}")
    print(f"  ferry.backend_info(): {info['ferry_backend']}")
    print(f"  load average at start: {loadavg(info['loadavg_start'])}")
    mode = "--quick, " if settings.quick else ""
    print(
        f"  settings: {mode}workloads {','.join(settings.workloads)}, "
        f"batch_size {settings.batch_size}, shuffle=True (generator seed {settings.seed}), "
        f"median of {settings.repeats} interleaved run(s) after 1 warm-up "
        f"({settings.warmup_batches} batches), time.perf_counter"
    )
    if settings.stand_in:
        print(
            f"  CPU STAND-IN ({ON_CPU_ENV}=1 or --on-cpu): device='cpu' and tiny sizes, to "
            "exercise the code; these figures mean nothing"
        )
    print()


def print_h2d_table(res: WorkloadResult) -> None:
    head = (
        f"{'workload':<8} | {'loader':<40} | {'samples/s':>11} | {'spread':>6} | "
        f"{'vs best torch':>13} | {'% of ceiling':>12}"
    )
    print(head)
    print("-" * len(head))
    torch_best, ceiling = res.best("torch"), res.best("ceiling")
    for r in res.rows:
        vs = f"{r.median / torch_best.median:.2f}x" if torch_best else "-"
        pct = f"{100 * r.median / ceiling.median:.1f}%" if ceiling else "-"
        print(
            f"{res.name:<8} | {r.name:<40} | {r.median:>11,.0f} | {r.spread_pct:>5.0f}% | "
            f"{vs:>13} | {pct:>12}"
        )
    print("-" * len(head))


def print_train_table(res: WorkloadResult) -> None:
    head = (
        f"{'workload':<8} | {'loader':<40} | {'samples/s':>11} | {'step ms':>7} | "
        f"{'stall':>6} | {'spread':>6} | {'vs best torch':>13}"
    )
    print(head)
    print("-" * len(head))
    torch_best = res.best("torch")
    for r in res.rows:
        vs = f"{r.median / torch_best.median:.2f}x" if torch_best else "-"
        print(
            f"{res.name:<8} | {r.name:<40} | {r.median:>11,.0f} | {r.step_ms:>7.2f} | "
            f"{r.stall_pct:>5.1f}% | {r.spread_pct:>5.0f}% | {vs:>13}"
        )
    print("-" * len(head))


def goal(met: bool, settings: Settings) -> str:
    if settings.stand_in:
        return "not judged: CPU stand-in"
    return "met" if met else "NOT met"


def h2d_summary(res: WorkloadResult, settings: Settings) -> dict[str, Any]:
    torch_best, ceiling = res.best("torch"), res.best("ceiling")
    assert torch_best is not None and ceiling is not None
    print(f"{res.name}: {res.title}")
    print(
        f"  best torch: {torch_best.name}; ceiling: {ceiling.name} "
        f"({ceiling.median:,.0f} samples/s)"
    )
    out: dict[str, Any] = {"best_torch": torch_best.name, "ceiling": ceiling.name}
    for f in (r for r in res.rows if r.kind == "ferry"):
        pct = 100 * f.median / ceiling.median
        vs = f.median / torch_best.median
        met = pct >= H2D_GOAL_PCT_CEILING
        print(
            f"  {f.name}: {pct:.0f}% of the ceiling (goal >= {H2D_GOAL_PCT_CEILING:.0f}%: "
            f"{goal(met, settings)}); {vs:.2f}x best torch"
        )
        out[f.name] = {
            "pct_of_ceiling": pct,
            "vs_best_torch": vs,
            "goal_pct_ceiling_met": None if settings.stand_in else met,
        }
    return out


def train_summary(res: WorkloadResult, settings: Settings) -> dict[str, Any]:
    torch_best, alone = res.best("torch"), res.best("reference")
    assert torch_best is not None and alone is not None
    print(f"{res.name}: {res.title}")
    print(
        f"  {torch_best.name}: {torch_best.step_ms:.2f} ms/step, stall "
        f"{torch_best.stall_pct:.1f}%; {alone.name}: {alone.step_ms:.2f} ms/step"
    )
    out: dict[str, Any] = {"torch": torch_best.name, "model_alone_step_ms": alone.step_ms}
    for f in (r for r in res.rows if r.kind == "ferry"):
        ratio = f.median / torch_best.median
        stall_met, ahead = f.stall_pct <= TRAIN_GOAL_STALL_PCT, ratio > 1.0
        print(
            f"  {f.name}: {f.step_ms:.2f} ms/step ({f.step_ms / alone.step_ms:.2f}x the model "
            f"alone), stall {f.stall_pct:.1f}% (goal <= {TRAIN_GOAL_STALL_PCT:.0f}%: "
            f"{goal(stall_met, settings)}); ferry/torch {ratio:.2f}x samples/s (goal ferry "
            f"ahead: {goal(ahead, settings)})"
        )
        out[f.name] = {
            "step_ms": f.step_ms,
            "stall_pct": f.stall_pct,
            "vs_torch": ratio,
            "vs_model_alone": f.step_ms / alone.step_ms,
            "goal_stall_met": None if settings.stand_in else stall_met,
            "goal_ahead_met": None if settings.stand_in else ahead,
        }
    return out


def print_notes(results: Sequence[WorkloadResult]) -> None:
    print()
    for res in results:
        for line in res.notes:
            print(f"  note {res.name}: {line}")
        for r in res.rows:
            if r.note:
                print(f"  note {res.name} / {r.name}: {r.note}")
        used = "; ".join(f"{r.name}: {','.join(r.paths)}" for r in res.rows if r.kind == "ferry")
        if used:
            print(f"  note {res.name}: ferry's iterator (path) per row: {used}")


def to_json(res: WorkloadResult, summary: dict[str, Any], settings: Settings) -> dict[str, Any]:
    torch_best, ceiling = res.best("torch"), res.best("ceiling")
    rows = [
        {
            "loader": r.name,
            "kind": r.kind,
            "samples_per_s_median": r.median,
            "runs": [asdict(x) for x in r.runs],
            "spread_pct": r.spread_pct,
            "ratio_vs_best_torch": r.median / torch_best.median if torch_best else None,
            "pct_of_ceiling": 100 * r.median / ceiling.median if ceiling else None,
            **(
                {"step_ms_median": r.step_ms, "stall_pct_median": r.stall_pct}
                if res.name == "TRAIN"
                else {}
            ),
            "paths": r.paths,
            "note": r.note,
        }
        for r in res.rows
    ]
    return {
        "title": res.title,
        "device": settings.device,
        "stand_in": settings.stand_in,
        "notes": res.notes,
        "rows": rows,
        "summary": summary,
    }


def skipped(settings: Settings, reason: str) -> dict[str, Any]:
    """The workloads that cannot run here, each with the reason, in the table and JSON."""
    print("ferry device-delivery benchmark")
    head = f"{'workload':<8} | result"
    print(head)
    print("-" * 72)
    out = {}
    for name in settings.workloads:
        print(f"{name:<8} | skipped: {reason}")
        out[name] = {
            "title": TITLES[name](settings),
            "skipped": reason,
            "rows": [],
            "notes": [
                "run on a machine with a CUDA device: "
                f"python -m ferry.bench --workloads {','.join(WORKLOADS)}"
            ],
            "summary": {},
        }
    print("-" * 72)
    print(
        f"  run them where torch sees a CUDA device: python -m ferry.bench --workloads "
        f"{','.join(WORKLOADS)}"
    )
    return out


# ------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="W1 of 20,000 images, 1 repeat")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    p.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {','.join(WORKLOADS)}"
    )
    p.add_argument("--repeats", type=int, help="measured runs per config (default 3, quick 1)")
    p.add_argument(
        "--on-cpu",
        action="store_true",
        help=f"run on the CPU with tiny sizes, to exercise the code (or {ON_CPU_ENV}=1)",
    )
    return p.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so workers are shut down


def run_workloads(settings: Settings, info: dict[str, Any]) -> dict[str, Any]:
    device = torch.device(settings.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        torch.zeros(1, device=device)  # the context is made before anything is timed
        synchronize(device)
    info["device"] = device_info(device)
    print_header(info, settings)
    runners = {"H2D": run_h2d, "TRAIN": run_train}
    results = [runners[w](settings, device) for w in settings.workloads]
    out: dict[str, Any] = {}
    for res in results:
        (print_h2d_table if res.name == "H2D" else print_train_table)(res)
    print()
    for res in results:
        summary = (h2d_summary if res.name == "H2D" else train_summary)(res, settings)
        out[res.name] = to_json(res, summary, settings)
    print_notes(results)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.from_args(args)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    start = time.perf_counter()
    info = machine_info()
    missing = None if settings.stand_in else cuda_missing()
    out = skipped(settings, missing) if missing else run_workloads(settings, info)
    wall = time.perf_counter() - start
    info["loadavg_end"] = os.getloadavg()
    if not missing:
        print(
            f"\ntotal wall time {wall:.1f} s; load average at end: {loadavg(info['loadavg_end'])}"
        )
    if args.json:
        doc = {"machine": info, "settings": asdict(settings), "workloads": out, "wall_s": wall}
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
