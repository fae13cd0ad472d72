"""W2, W2-dict, TTFB and HELD: ferry's worker processes against torch's DataLoader.

W2:      a Python map-style dataset over uint8 3x40x40 images in a numpy array; each
         __getitem__ takes a random 32x32 crop, flips it at random and converts it to
         float32 / 255 in numpy (numpy's global generator, which torch seeds per worker);
         samples are (tensor, int label).
W2-dict: the same, samples {"image": tensor, "label": int, "id": "img-<i>"}.
TTFB:    time to the first batch with 2 workers (construct the loader, iter(), next()),
         under the fork and spawn start methods.
HELD:    every batch of a 3,000-sample dataset (batch size 1, three tensors per sample,
         2 workers) kept in a list, in a child process whose soft RLIMIT_NOFILE is low.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset

import ferry

from .common import (
    Column,
    Config,
    Progress,
    Result,
    Row,
    Run,
    Settings,
    Workload,
    first_line,
    goal,
    iterator_path,
    kind_of,
    loader_config,
    loader_kwargs,
    measure,
    runs,
    time_epoch,
    touch,
)

IMAGE_SHAPE = (3, 40, 40)
CROP = 32
NUM_CLASSES = 10
IMAGES = 20_000
W2_GOAL_VS_TORCH = 1.8
HELD_SAMPLES = 3_000
HELD_TIMEOUT_S = 120.0
HELD_CHILD_RESULT = "HELD-RESULT "  # the line of the child's stdout that carries its result


# --------------------------------------------------------------------------- datasets
# At module level, so that spawned workers and the held-batches child can import them.


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


def dataset_title(dataset: RandomCrops) -> str:
    return (
        f"map-style Python dataset, {len(dataset):,} uint8 {'x'.join(map(str, IMAGE_SHAPE))} "
        f"images ({dataset.images.nbytes / 1e6:.0f} MB numpy array), random {CROP}x{CROP} crop "
        "+ flip + float32/255 per __getitem__"
    )


# ------------------------------------------------------------------------- throughput


def persistent_config(cls: type[TorchDataLoader], dataset: Dataset[Any],
                      settings: Settings) -> Config:
    """One loader with persistent workers: the warm-up is its first epoch (workers start),
    each run a later epoch."""
    holder: list[TorchDataLoader] = []

    def warm_up() -> Run:
        holder.append(cls(dataset, **loader_kwargs(settings, 2, persistent_workers=True)))
        return time_epoch(holder[0], None)

    return Config(
        f"{kind_of(cls)} nw=2, persistent, later epoch", "reference",
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
        return Run(len(order), time.perf_counter() - start, path="none")

    return Config(
        "__getitem__ alone, 1 process", "reference", run, run,
        note="no loader, no collation: what one core produces; the gap to torch nw=0 is "
        "the loader's and default_collate's share",
    )


def run_throughput(name: str, dataset: RandomCrops, sample: str, settings: Settings,
                   progress: Progress) -> Result:
    np.random.seed(settings.seed)  # the nw=0 loaders draw from this process's generator
    fresh = [(TorchDataLoader, 0), (TorchDataLoader, 1), (ferry.DataLoader, 1),
             (TorchDataLoader, 2), (ferry.DataLoader, 2)]
    configs = [
        loader_config(f"{kind_of(cls)} nw={w}", kind_of(cls),
                      lambda cls=cls, w=w: cls(dataset, **loader_kwargs(settings, w)),
                      settings.warmup_batches)
        for cls, w in fresh
    ]
    configs += [
        persistent_config(TorchDataLoader, dataset, settings),
        persistent_config(ferry.DataLoader, dataset, settings),
        getitem_alone_config(dataset, settings),
    ]
    res = Result(
        name,
        f"{dataset_title(dataset)}, samples {sample}",
        measure(configs, settings.repeats, progress),
        [
            "each fresh-loader run is one full epoch; worker start-up (fork) is inside it, "
            "as a user pays it every epoch without persistent_workers",
            "best torch = the fastest of torch nw=0, nw=1, nw=2",
        ],
    )
    best, serial = res.best("torch"), res.row("torch nw=0")
    assert best is not None and serial is not None
    res.summary["best_torch"] = best.name
    res.lines.append(f"  best torch: {best.name} ({best.median:,.0f} samples/s)")
    # Two workers can at best do torch nw=0's work on min(2, cores) cores at once.
    cores = min(2, len(os.sched_getaffinity(0)))
    bound = res.summary["perfect_scaling"] = cores * serial.median
    res.lines.append(
        f"  perfect 2-worker scaling: {cores} x torch nw=0 = {bound:,.0f} samples/s "
        f"({bound / best.median:.2f}x best torch; worker start-up and the main "
        "process's share not counted)"
    )
    torch_rows = [r for r in res.rows if r.kind == "torch"]
    for f in (r for r in res.rows if r.kind == "ferry"):
        vs = f.median / best.median
        line = f"  {f.name}: {vs:.2f}x best torch"
        if f.name == "ferry nw=2":
            whose = "goal" if name == "W2" else "W2's goal"
            line += f" ({whose} >= {W2_GOAL_VS_TORCH}x: {goal(vs >= W2_GOAL_VS_TORCH)})"
            line += f", {100 * f.median / bound:.0f}% of perfect scaling"
        each = {t.name: f.median / t.median for t in torch_rows}
        res.summarize(
            f"{line}; " + ", ".join(f"/ {k} = {v:.2f}x" for k, v in each.items()),
            vs_best_torch=vs,
            vs_each_torch=each,
            pct_of_perfect_scaling=100 * f.median / bound,
        )
    return res


def run_w2(settings: Settings, progress: Progress) -> Result:
    return run_throughput("W2", RandomCrops(IMAGES, settings.seed), "(tensor, int)", settings,
                          progress)


def run_w2_dict(settings: Settings, progress: Progress) -> Result:
    return run_throughput("W2-dict", RandomCropsDict(IMAGES, settings.seed),
                          '{"image", "label", "id": "img-<i>"}', settings, progress)


# ----------------------------------------------------------------- time to first batch


def ttfb_config(cls: type[TorchDataLoader], dataset: Dataset[Any], settings: Settings,
                context: str) -> Config:
    """Seconds from constructing a 2-worker loader to holding its first batch."""

    def once() -> Run:
        start = time.perf_counter()
        loader = cls(dataset, **loader_kwargs(settings, 2, multiprocessing_context=context))
        it = iter(loader)
        samples = touch(next(it))
        elapsed = time.perf_counter() - start
        path = iterator_path(it)
        del it, loader  # shutdown outside the timed region
        return Run(samples, elapsed, path=path)

    return Config(f"{kind_of(cls)} nw=2, {context}", kind_of(cls), once, once)


def torch_twin(row: Row, res: Result) -> Row | None:
    return res.row(row.name.replace("ferry", "torch"))


def vs_torch(row: Row, res: Result) -> float | None:
    twin = torch_twin(row, res)
    return row.median_seconds / twin.median_seconds if twin else None


TTFB_COLUMNS = (
    Column("median ms", "ms_median", lambda r, _: 1e3 * r.median_seconds, ".1f"),
    Column("min ms", "ms_min", lambda r, _: 1e3 * min(x.seconds for x in r.runs), ".1f", width=7),
    Column("max ms", "ms_max", lambda r, _: 1e3 * max(x.seconds for x in r.runs), ".1f", width=7),
    Column("vs torch", "ratio_vs_torch", vs_torch, ".2f", "x"),
)


def run_ttfb(settings: Settings, progress: Progress) -> Result:
    dataset = RandomCrops(IMAGES, settings.seed)
    configs = [
        ttfb_config(cls, dataset, settings, context)
        for context in ("fork", "spawn")
        for cls in (TorchDataLoader, ferry.DataLoader)
    ]
    res = Result(
        "TTFB",
        f"time to first batch, 2 workers, the W2 dataset, batch_size {settings.batch_size}",
        measure(configs, settings.repeats, progress),
        [
            "timed: constructing the loader, iter(), next(); worker shutdown is not timed",
            f"median of {settings.repeats} interleaved tries after one excluded try each",
            f"under spawn each worker imports the main module, torch and ferry, and receives "
            f"the dataset ({dataset.images.nbytes / 1e6:.0f} MB of images): torch pickles "
            "it into each worker's start-up pipe in turn, ferry once into a memfd that "
            "every worker reads",
        ],
        TTFB_COLUMNS,
    )
    for f in (r for r in res.rows if r.kind == "ferry"):
        t = torch_twin(f, res)
        assert t is not None
        ratio, met = f.median_seconds / t.median_seconds, f.median_seconds <= t.median_seconds
        res.summarize(
            f"  {f.name}: {1e3 * f.median_seconds:.1f} ms vs torch {1e3 * t.median_seconds:.1f} "
            f"ms = {ratio:.2f}x (goal ferry <= torch: {goal(met)})",
            ferry_s=f.median_seconds, torch_s=t.median_seconds, goal_met=met,
        )
    return res


# ----------------------------------------------------------------------- held batches


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


def run_held_child(loader: str, nofile: int) -> Row:
    """One loader in a child process; its row holds the child's result."""
    cmd = [sys.executable, "-m", "ferry.bench.workers", loader, str(HELD_SAMPLES), str(nofile)]
    start = time.perf_counter()
    r: dict[str, Any] = {"ok": False, "batches": 0, "seconds": None}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=HELD_TIMEOUT_S)
        line = next((x for x in proc.stdout.splitlines() if x.startswith(HELD_CHILD_RESULT)), "")
        if line:
            r = json.loads(line[len(HELD_CHILD_RESULT) :])
        else:  # the child died before it could report
            tail = (proc.stderr.strip().splitlines()[-1:] or [""])[0][:200]
            r["error"] = f"child exit code {proc.returncode}: {tail}"
    except subprocess.TimeoutExpired:
        r["error"] = f"timed out after {time.perf_counter() - start:.0f} s (killed)"
    wall = time.perf_counter() - start
    seconds = wall if r["seconds"] is None else r["seconds"]
    return Row(f"{loader} nw=2, bs 1, nofile {nofile}", loader,
               runs=[Run(r["batches"], seconds)],
               extra={"ok": r["ok"], "error": r["error"], "wall_seconds": wall})


def held_result(row: Row, res: Result) -> str:
    if row.extra["ok"]:
        return f"ok, {row.runs[0].samples:,} batches held, values checked"
    first_sentence = (row.extra["error"] or "").split(". ", 1)[0]
    return f"FAILED after {row.runs[0].samples:,} batches: {first_sentence}"


HELD_COLUMNS = (
    Column("time s", "seconds", lambda r, _: r.runs[0].seconds, ".2f", width=6),
    Column("child s", "wall_seconds", lambda r, _: r.extra["wall_seconds"], ".2f"),
    Column("result", "result", held_result),
)


def run_held(settings: Settings, progress: Progress) -> Result:
    nofile = settings.args.nofile
    rows = []
    progress.add(2)
    for loader in ("torch", "ferry"):
        progress.step(f"{loader} nw=2, bs 1, in a child process")
        rows.append(run_held_child(loader, nofile))
    res = Result(
        "HELD",
        f"{HELD_SAMPLES:,} batches of bs 1 (three tensors each) all kept, 2 workers, soft "
        f"RLIMIT_NOFILE {nofile}",
        rows,
        [
            f"each loader runs in its own child process (subprocess, timeout "
            f"{HELD_TIMEOUT_S:.0f} s); 'time s' = loader start to last batch or failure in "
            "the child, 'child s' = the whole child including interpreter start-up; a "
            "works-vs-fails row, not a ratio",
        ],
        HELD_COLUMNS,
    )
    ok = {r.kind: r.extra["ok"] for r in rows}
    res.summary.update({r.kind: {"batches": r.runs[0].samples, "seconds": r.runs[0].seconds,
                                 **r.extra} for r in rows})
    res.lines.append(
        f"  torch: {'ok' if ok['torch'] else 'failed'}; ferry: {'ok' if ok['ferry'] else 'failed'}"
        f" (goal ferry works: {goal(ok['ferry'])})"
    )
    res.lines += [f"  {r.kind}'s error: {r.extra['error']}" for r in rows if not r.extra["ok"]]
    if ok["torch"]:
        res.lines.append("  torch did not fail at this limit: lower --nofile to show the "
                         "difference")
    return res


def once(settings: Settings) -> int:
    return 1  # each loader runs once, in its child: works or fails


def held_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--nofile", type=int, default=256,
                       help="soft RLIMIT_NOFILE of the held-batches children (default 256)")


WORKLOADS = (
    Workload("W2", "a Python dataset with numpy augmentation: ferry's worker processes "
             "against torch's", run_w2, runs(9, 2)),
    Workload("W2-dict", "W2 with dict samples and a string id", run_w2_dict, runs(9, 2)),
    Workload("TTFB", "time to the first batch with 2 workers, under fork and spawn", run_ttfb,
             runs(5, 2)),
    Workload("HELD", "every batch kept under a low RLIMIT_NOFILE, in a child process",
             run_held, once, options=held_options),
)

if __name__ == "__main__":  # the held-batches child: loader, samples, nofile
    sys.exit(held_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
