"""H2D and TRAIN: ferry's batches on a CUDA device against torch's DataLoader.

H2D:   W1 (a TensorDataset of uint8 3x32x32 images + int64 labels, batch 256, shuffled)
       delivered on the device: ferry.DataLoader(device="cuda") and torch's
       DataLoader(pin_memory=True) + .to(device, non_blocking=True), against a ceiling
       measured in the same run: copy_(non_blocking=True) of the same bytes, batch by
       batch, from a pinned host buffer into a device buffer, synchronized at the end.
TRAIN: a small conv net trained with SGD on those batches, fed by ferry (device="cuda",
       ferry's default workers) and by torch's DataLoader(pin_memory=True, num_workers=2)
       + .to(device, non_blocking=True): step time, data stall share (time blocked
       fetching the next batch / loop time) and the ratio between the two.

Without a CUDA device both are reported as skipped, with the reason.
`--gpu-workloads-on-cpu` (or FERRY_BENCH_GPU_ON_CPU=1) runs the same code with
device="cpu" and tiny sizes, so that a machine without a GPU exercises it; those figures
mean nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import TensorDataset

import ferry

from .common import (
    SPREAD,
    VS_BEST_TORCH,
    WITH_CEILING,
    Column,
    Config,
    Progress,
    Result,
    Run,
    Settings,
    Workload,
    iterator_path,
    measure,
    runs,
)
from .common import goal as met_or_not
from .native import random_images

ON_CPU_ENV = "FERRY_BENCH_GPU_ON_CPU"
NUM_CLASSES = 10
CEILING_INNER = 5
TORCH_WORKERS = 2
H2D_GOAL_PCT_CEILING = 90.0
TRAIN_GOAL_STALL_PCT = 2.0
FERRY_DEFAULTS_NOTE = (
    "ferry.DataLoader(..., device=) with its defaults (num_workers=0): on a TensorDataset "
    "the native path, with ferry.backend_info()['native_threads_default'] C++ threads"
)


def stand_in(settings: Settings) -> bool:
    """Whether the GPU workloads run on the CPU, to exercise their code."""
    flag = getattr(settings.args, "gpu_workloads_on_cpu", False)
    return flag or os.environ.get(ON_CPU_ENV, "") not in ("", "0")


@dataclass(frozen=True)
class Sizes:
    device: torch.device
    images: int
    batch_size: int
    train_batches: int | None  # per TRAIN run; None: a full epoch
    warmup_batches: int

    @classmethod
    def of(cls, settings: Settings) -> Sizes:
        if stand_in(settings):  # exercises the code only: tiny
            return cls(torch.device("cpu"), 1_024, 64, 8, 2)
        device = torch.device("cuda", torch.cuda.current_device())
        torch.zeros(1, device=device)  # the context is made before anything is timed
        synchronize(device)
        images = 20_000 if settings.quick else 100_000
        return cls(device, images, settings.batch_size, None, settings.warmup_batches)


def gpu_runs(settings: Settings) -> int:
    """One run per config for the CPU stand-in: its figures mean nothing anyway."""
    return (settings.args.repeats or 1) if stand_in(settings) else runs(3, 1)(settings)


def cuda_missing(settings: Settings) -> str | None:
    """Why the GPU workloads cannot run here, or None when they can."""
    if stand_in(settings) or torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"no CUDA device (torch {torch.__version__} is built without CUDA)"
    return "no CUDA device (torch.cuda.is_available() is False)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def result(name: str, title: str, rows: list[Any], notes: list[str], sizes: Sizes,
           columns: Sequence[Column]) -> Result:
    info = device_info(sizes.device)
    notes = [f"device: {info}", *notes]
    if sizes.device.type == "cpu":
        notes.insert(0, f"CPU STAND-IN ({ON_CPU_ENV}=1 or --gpu-workloads-on-cpu): "
                        "device='cpu' and tiny sizes, to exercise the code; these figures "
                        "mean nothing")
    extra = {"device": sizes.device.type, "stand_in": sizes.device.type == "cpu",
             "device_info": info}
    return Result(name, title, rows, notes, columns, extra=extra)


def goal(met: bool, sizes: Sizes) -> str:
    return "not judged: CPU stand-in" if sizes.device.type == "cpu" else met_or_not(met)


def judged(met: bool, sizes: Sizes) -> bool | None:
    return None if sizes.device.type == "cpu" else met


# ----------------------------------------------------------------------------- timing


Batch = Sequence[Tensor]
Fetch = Callable[[Iterator[Any]], Batch]  # next batch, on the device


def fetch_as_is(it: Iterator[Any]) -> Batch:
    return next(it)


def fetch_and_move(device: torch.device) -> Fetch:
    """torch's way: next() from a pinned loader, then .to(device, non_blocking=True)."""

    def fetch(it: Iterator[Any]) -> Batch:
        return [t.to(device, non_blocking=True) for t in next(it)]

    return fetch


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


def time_loop(make: Callable[[], Iterable[Any]], fetch: Fetch, trainer: Trainer | None,
              device: torch.device, max_steps: int | None) -> Run:
    """A fresh loader's epoch (or `max_steps` batches) delivered on `device`, each batch
    trained on when there is a `trainer`. wait_s is the time the loop spends in iter()
    (worker start-up) and fetching batches; the final synchronize is in the loop's time,
    shutdown is not."""
    loader = make()
    samples = steps = 0
    start = time.perf_counter()
    it = iter(loader)
    wait = time.perf_counter() - start
    while max_steps is None or steps < max_steps:
        t0 = time.perf_counter()
        try:
            batch = fetch(it)
        except StopIteration:
            break
        wait += time.perf_counter() - t0
        if trainer is not None:
            trainer.step(*batch)
        samples += len(batch[0])
        steps += 1
    synchronize(device)
    elapsed = time.perf_counter() - start
    path = iterator_path(it)
    del it, loader
    return Run(samples, elapsed, steps, wait, path)


def loop_config(name: str, kind: str, make: Callable[[], Iterable[Any]], fetch: Fetch,
                sizes: Sizes, trainer: Trainer | None = None, note: str = "") -> Config:
    """H2D (no trainer) times whole epochs, TRAIN (a trainer) its number of steps."""
    steps = None if trainer is None else sizes.train_batches
    return Config(
        name, kind,
        run=lambda: time_loop(make, fetch, trainer, sizes.device, steps),
        warm_up=lambda: time_loop(make, fetch, trainer, sizes.device, sizes.warmup_batches),
        note=note,
    )


# -------------------------------------------------------------------------- workloads


def loaders(dataset: TensorDataset, settings: Settings,
            sizes: Sizes) -> dict[str, Callable[..., Iterable[Any]]]:
    """Makers of fresh loaders: ferry's (device= or host only) and torch's (pinned where
    the device is CUDA), each with its own equal generator."""
    device, pin = sizes.device, sizes.device.type == "cuda"

    def common() -> dict[str, Any]:
        return {
            "batch_size": sizes.batch_size,
            "shuffle": True,
            "generator": torch.Generator().manual_seed(settings.seed),
        }

    return {
        "ferry": lambda: ferry.DataLoader(dataset, **common(), device=device),
        "ferry host": lambda: ferry.DataLoader(dataset, **common()),
        "torch": lambda nw: TorchDataLoader(dataset, **common(), num_workers=nw, pin_memory=pin),
    }


def copy_configs(images: Tensor, labels: Tensor, sizes: Sizes) -> list[Config]:
    """The ceiling: the same bytes copied with copy_(non_blocking=True) from a pinned host
    buffer into a device buffer (cudaMemcpyAsync), per batch-sized slice and in one call
    per tensor, synchronized at the end of each pass."""
    device = sizes.device
    pinned = device.type == "cuda"
    src = [t.pin_memory() if pinned else t.clone() for t in (images, labels)]
    dst = [torch.empty_like(t, device=device) for t in src]
    n = len(images)

    def copier(step: int) -> Callable[[], Run]:
        pairs = [(a[lo : lo + step], b[lo : lo + step])
                 for lo in range(0, n, step) for a, b in zip(src, dst, strict=True)]

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
    per_batch, whole = copier(sizes.batch_size), copier(n)
    return [
        Config(f"copy_ {src_name} -> {device.type}, per batch", "ceiling", per_batch, per_batch,
               note=f"{-(-n // sizes.batch_size)} batch-sized slices of each tensor, "
               f"fastest of {CEILING_INNER} passes"),
        Config(f"copy_ {src_name} -> {device.type}, one call", "reference", whole, whole,
               note="one copy_ per tensor (images, labels): the link's bandwidth"),
    ]


def pin_name(sizes: Sizes) -> str:
    return "pin_memory" if sizes.device.type == "cuda" else "no pin_memory (CPU)"


def run_h2d(settings: Settings, progress: Progress) -> Result:
    sizes = Sizes.of(settings)
    images, labels = random_images(sizes.images, settings.seed)
    make = loaders(TensorDataset(images, labels), settings, sizes)
    to_device, nw, pin = fetch_and_move(sizes.device), TORCH_WORKERS, pin_name(sizes)
    configs = [
        loop_config(f"ferry device={sizes.device.type}, default workers", "ferry",
                    make["ferry"], fetch_as_is, sizes, note=FERRY_DEFAULTS_NOTE),
        loop_config("ferry host only (no device=)", "reference", make["ferry host"],
                    fetch_as_is, sizes, note="the same loader without device=: what the host "
                    "side (sampler + gather) delivers, no copy"),
        loop_config(f"torch nw=0, {pin} + .to()", "torch", lambda: make["torch"](0), to_device,
                    sizes),
        loop_config(f"torch nw={nw}, {pin} + .to()", "torch", lambda: make["torch"](nw),
                    to_device, sizes),
        *copy_configs(images, labels, sizes),
    ]
    res = result(
        "H2D",
        f"W1 delivered on the device: TensorDataset, {sizes.images:,} uint8 3x32x32 images + "
        f"int64 labels ({sizes.images * 3 * 32 * 32 / 1e6:.0f} MB), batch_size "
        f"{sizes.batch_size}, shuffled",
        measure(configs, settings.repeats, progress),
        [
            "each loader run is one epoch of a fresh loader (iter() and worker start-up "
            "included), ending with a synchronize; batches are not read on the host",
            "ceiling = copy_(non_blocking=True) of the same bytes (images+labels) from a "
            "pinned host buffer into a preallocated device buffer, per batch-sized slice "
            "(cudaMemcpyAsync), synchronized at the end",
        ],
        sizes,
        WITH_CEILING,
    )
    best, ceiling = res.best("torch"), res.best("ceiling")
    assert best is not None and ceiling is not None
    res.summary.update(best_torch=best.name, ceiling=ceiling.name)
    res.lines.append(
        f"  best torch: {best.name}; ceiling: {ceiling.name} ({ceiling.median:,.0f} samples/s)"
    )
    for f in (r for r in res.rows if r.kind == "ferry"):
        pct, vs = 100 * f.median / ceiling.median, f.median / best.median
        met = pct >= H2D_GOAL_PCT_CEILING
        res.summarize(
            f"  {f.name}: {pct:.0f}% of the ceiling (goal >= {H2D_GOAL_PCT_CEILING:.0f}%: "
            f"{goal(met, sizes)}); {vs:.2f}x best torch",
            pct_of_ceiling=pct, vs_best_torch=vs, goal_pct_ceiling_met=judged(met, sizes),
        )
    return res


TRAIN_COLUMNS = (
    WITH_CEILING[0],
    Column("step ms", "step_ms_median", lambda r, _: r.step_ms, ".2f"),
    Column("stall", "stall_pct_median", lambda r, _: r.stall_pct, ".1f", "%", width=6),
    SPREAD,
    VS_BEST_TORCH,
)


def run_train(settings: Settings, progress: Progress) -> Result:
    sizes = Sizes.of(settings)
    images, labels = random_images(sizes.images, settings.seed)
    make = loaders(TensorDataset(images, labels), settings, sizes)
    trainer = Trainer(sizes.device, settings.seed)
    epoch = -(-sizes.images // sizes.batch_size)
    steps = min(epoch, sizes.train_batches or epoch)
    resident = [t[: sizes.batch_size].to(sizes.device) for t in (images, labels)]

    def same_batch() -> Iterable[Any]:
        return iter([resident] * max(steps, sizes.warmup_batches))

    configs = [
        loop_config(f"ferry device={sizes.device.type}, default workers", "ferry",
                    make["ferry"], fetch_as_is, sizes, trainer, note=FERRY_DEFAULTS_NOTE),
        loop_config(f"torch nw={TORCH_WORKERS}, {pin_name(sizes)} + .to()", "torch",
                    lambda: make["torch"](TORCH_WORKERS), fetch_and_move(sizes.device), sizes,
                    trainer),
        loop_config("model alone, one resident batch", "reference", same_batch, fetch_as_is,
                    sizes, trainer, note="the same steps on one batch already on the device: "
                    "the step time with no loader at all"),
    ]
    per_run = "a full epoch" if sizes.train_batches is None else f"{sizes.train_batches}"
    res = result(
        "TRAIN",
        f"SGD steps of a small conv net on W1 batches ({sizes.images:,} images, batch_size "
        f"{sizes.batch_size}), {per_run} steps per run",
        measure(configs, settings.repeats, progress),
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
        sizes,
        TRAIN_COLUMNS,
    )
    best, alone = res.best("torch"), res.best("reference")
    assert best is not None and alone is not None
    res.summary.update(torch=best.name, model_alone_step_ms=alone.step_ms)
    res.lines.append(
        f"  {best.name}: {best.step_ms:.2f} ms/step, stall {best.stall_pct:.1f}%; "
        f"{alone.name}: {alone.step_ms:.2f} ms/step"
    )
    for f in (r for r in res.rows if r.kind == "ferry"):
        ratio = f.median / best.median
        stall_met, ahead = f.stall_pct <= TRAIN_GOAL_STALL_PCT, ratio > 1.0
        res.summarize(
            f"  {f.name}: {f.step_ms:.2f} ms/step ({f.step_ms / alone.step_ms:.2f}x the model "
            f"alone), stall {f.stall_pct:.1f}% (goal <= {TRAIN_GOAL_STALL_PCT:.0f}%: "
            f"{goal(stall_met, sizes)}); ferry/torch {ratio:.2f}x samples/s (goal ferry "
            f"ahead: {goal(ahead, sizes)})",
            step_ms=f.step_ms,
            stall_pct=f.stall_pct,
            vs_torch=ratio,
            vs_model_alone=f.step_ms / alone.step_ms,
            goal_stall_met=judged(stall_met, sizes),
            goal_ahead_met=judged(ahead, sizes),
        )
    return res


def gpu_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--gpu-workloads-on-cpu", action="store_true",
                       help="run them on the CPU with tiny sizes, to exercise their code (or "
                       f"{ON_CPU_ENV}=1); their figures then mean nothing")


# Last in a run: this process initialises CUDA only after other workloads forked workers.
WORKLOADS = (
    Workload("H2D", "W1's batches delivered on a CUDA device, against a pinned-copy ceiling",
             run_h2d, gpu_runs, cuda_missing, gpu_options),
    Workload("TRAIN", "a small training loop's data stall on a CUDA device", run_train,
             gpu_runs, cuda_missing, gpu_options),
)
