#!/usr/bin/env python3
"""ferry's native gather against torch.utils.data.DataLoader, side by side, same process.

W1: a TensorDataset of uint8 3x32x32 images (random bytes) + int64 labels, in memory.
W3: the same kind of images in an on-disk np.memmap (>= 1 GB; warm page cache).

Every figure is samples/s, the median of R interleaved runs (torch, ferry, torch,
ferry, ...), each after one excluded warm-up pass, and is shown as a ratio against
torch and against a plain-copy ceiling measured in the same run. Nothing is asserted:
goals are printed next to the figures.

    PYTHONPATH=python python3 benchmarks/bench_native.py [--quick] [--json PATH]
        [--workloads W1,W3] [--repeats R]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Dataset, RandomSampler, TensorDataset
from torch.utils.data import DataLoader as TorchDataLoader

import ferry

from .common import Config, Progress, loadavg, machine_info, measure

IMAGE_SHAPE = (3, 32, 32)
W1_GOAL_VS_TORCH = 25.0
W1_GOAL_PCT_CEILING = 80.0
W3_GOAL_VS_TORCH = 10.0
TMP_ROOT = "/tmp"


@dataclass(frozen=True)
class Settings:
    quick: bool
    repeats: int
    workloads: tuple[str, ...]
    batch_size: int = 256
    seed: int = 0
    w1_images: int = 100_000
    w3_images: int = 350_000  # 350,000 x 3 KiB = 1.07 GB
    w3_batches: int = 300  # torch over a memmap is slow: a fixed number of batches
    warmup_batches: int = 10

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        workloads = tuple(w.strip().upper() for w in args.workloads.split(",") if w.strip())
        unknown = sorted(set(workloads) - {"W1", "W3"})
        if unknown:
            raise SystemExit(f"unknown workload(s) {unknown}; choose from W1, W3")
        repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
        if repeats < 1:
            raise SystemExit("--repeats must be >= 1")
        if args.quick:  # W3 ~200 MB; the whole run well under a minute on 2 cores
            return cls(
                True,
                repeats,
                workloads,
                w1_images=20_000,
                w3_images=65_000,
                w3_batches=100,
                warmup_batches=5,
            )
        return cls(False, repeats, workloads)


# ---------------------------------------------------------------------------- timing


Timing = tuple[int, float]  # (samples, seconds) of one pass


@dataclass
class Row:
    """A config's measured runs; holds no data, so the arrays can go."""

    name: str
    kind: str
    note: str
    runs: list[Timing] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [n / s for n, s in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def spread_pct(self) -> float:
        """(max - min) / median of the runs, in %: a quick look at the noise."""
        rates = self.rates
        return 100.0 * (max(rates) - min(rates)) / statistics.median(rates)


def touch(batch: Sequence[Tensor]) -> int:
    """Reads one element of every tensor in the batch (so it is materialised); returns
    the batch's sample count. Nothing is kept."""
    for t in batch:
        int(t.reshape(-1)[-1])
    return len(batch[0])


def time_loader(make: Callable[[], Iterable[Any]], max_batches: int | None) -> Timing:
    """Iterates a fresh loader for an epoch (or `max_batches`); worker start-up is
    inside the timed region (a user pays it every epoch), shutdown is outside."""
    loader = make()
    samples = 0
    start = time.perf_counter()
    it = iter(loader)
    for i, batch in enumerate(it):
        samples += touch(batch)
        if max_batches is not None and i + 1 >= max_batches:
            break
    elapsed = time.perf_counter() - start
    del it, loader
    return samples, elapsed


CEILING_INNER = 5


def time_copy(pairs: Sequence[tuple[Tensor, Tensor]], samples: int) -> Timing:
    """A plain `dst.copy_(src)` of each pair, back to back; the fastest of
    CEILING_INNER such passes (a ceiling is what a copy can reach: noise only lowers it)."""
    best = float("inf")
    for _ in range(CEILING_INNER):
        start = time.perf_counter()
        for src, dst in pairs:
            dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return samples, best


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def in_threads(n: int, fn: Callable[[], Timing]) -> Callable[[], Timing]:
    def run() -> Timing:
        with torch_threads(n):
            return fn()

    return run


def loader_config(
    name: str,
    kind: str,
    make: Callable[[], Iterable[Any]],
    settings: Settings,
    max_batches: int | None = None,
    note: str = "",
) -> Config:
    return Config(
        name=name,
        kind=kind,
        run=lambda: time_loader(make, max_batches),
        warm_up=lambda: time_loader(make, settings.warmup_batches),
        note=note,
    )


def make_loader(
    cls: type[TorchDataLoader], dataset: Dataset[Any], settings: Settings, workers: int
) -> Callable[[], Iterable[Any]]:
    def make() -> Iterable[Any]:
        return cls(
            dataset,
            batch_size=settings.batch_size,
            shuffle=True,
            num_workers=workers,
            generator=torch.Generator().manual_seed(settings.seed),
        )

    return make


# -------------------------------------------------------------------------- workloads


def random_images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *IMAGE_SHAPE), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), dtype=torch.int64, generator=g)
    return images, labels


def sampler_config(n: int, settings: Settings) -> Config:
    """The main thread's share of any loader: torch's RandomSampler + BatchSampler."""

    def run() -> Timing:
        gen = torch.Generator().manual_seed(settings.seed)
        sampler = BatchSampler(RandomSampler(range(n), generator=gen), settings.batch_size, False)
        start = time.perf_counter()
        samples = sum(len(b) for b in sampler)
        return samples, time.perf_counter() - start

    return Config(
        "torch sampler only (indices)",
        "reference",
        run,
        run,
        note="RandomSampler+BatchSampler in Python, no data; single-threaded pure Python, "
        "so a large spread here means the machine was busy",
    )


def w1_configs(settings: Settings) -> list[Config]:
    n = settings.w1_images
    images, labels = random_images(n, settings.seed)
    dataset = TensorDataset(images, labels)
    configs = [
        loader_config(
            f"torch nw={w}" if c is TorchDataLoader else f"ferry nw={w}",
            "torch" if c is TorchDataLoader else "ferry",
            make_loader(c, dataset, settings, w),
            settings,
        )
        for w in (0, 2)
        for c in (TorchDataLoader, ferry.DataLoader)
    ]
    # The same shuffled batches as index lists drawn before timing: ferry without the
    # main thread's share of torch's sampler, to show what that share costs.
    gen = torch.Generator().manual_seed(settings.seed)
    drawn = list(BatchSampler(RandomSampler(dataset, generator=gen), settings.batch_size, False))
    configs.append(
        loader_config(
            "ferry nw=2, indices drawn ahead",
            "reference",
            lambda: ferry.DataLoader(dataset, batch_sampler=drawn, num_workers=2),
            settings,
            note="batch_sampler = a list of the shuffled index batches, made before timing",
        )
    )
    pairs = [(images, torch.empty_like(images)), (labels, torch.empty_like(labels))]
    copy = in_threads(torch.get_num_threads(), lambda: time_copy(pairs, n))
    copy1 = in_threads(1, lambda: time_copy(pairs, n))
    gather = shuffled_gather(pairs, n, settings)
    configs += [
        Config(f"copy_ sequential, {torch.get_num_threads()} threads", "ceiling", copy, copy),
        Config("copy_ sequential, 1 thread", "ceiling", copy1, copy1),
        Config(
            "index_select shuffled, out=",
            "reference",
            gather,
            gather,
            note=f"torch intra-op threads {torch.get_num_threads()}",
        ),
        sampler_config(n, settings),
    ]
    return configs


def shuffled_gather(
    pairs: Sequence[tuple[Tensor, Tensor]], n: int, settings: Settings
) -> Callable[[], Timing]:
    """The same bytes gathered in a shuffled order, whole epoch in one call per tensor."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed))

    def run() -> Timing:
        start = time.perf_counter()
        for src, dst in pairs:
            torch.index_select(src, 0, perm, out=dst)
        return n, time.perf_counter() - start

    return run


class MemmapRowDataset(Dataset[tuple[Tensor, int]]):
    """The usual hand-written memmap dataset: one row read per __getitem__.

    Keeps only paths and opens the files lazily in each process, so it pickles cheaply
    under spawn/forkserver as well as fork."""

    def __init__(self, images_path: Path, labels_path: Path) -> None:
        self.images_path, self.labels_path = images_path, labels_path
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._len = len(np.load(labels_path, mmap_mode="r"))

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._images is None or self._labels is None:
            self._images = np.load(self.images_path, mmap_mode="r")
            self._labels = np.load(self.labels_path, mmap_mode="r")
        return self._images, self._labels

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        images, labels = self._open()
        return torch.from_numpy(np.array(images[i])), int(labels[i])

    def __len__(self) -> int:
        return self._len

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None, "_labels": None}


def write_memmap(directory: Path, n: int, seed: int) -> tuple[Path, Path]:
    """Random uint8 images and int64 labels as .npy files, written in chunks."""
    need = n * int(np.prod(IMAGE_SHAPE)) + n * 8
    free = shutil.disk_usage(directory).free
    if free < need * 1.1:
        raise SystemExit(f"W3 needs {need / 1e9:.2f} GB in {directory}, {free / 1e9:.2f} GB free")
    rng = np.random.default_rng(seed)
    images_path, labels_path = directory / "images.npy", directory / "labels.npy"
    images = np.lib.format.open_memmap(
        images_path, mode="w+", dtype=np.uint8, shape=(n, *IMAGE_SHAPE)
    )
    chunk = 32_768
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        images[lo:hi] = rng.integers(0, 256, (hi - lo, *IMAGE_SHAPE), dtype=np.uint8)
    images.flush()
    del images
    np.save(labels_path, rng.integers(0, 10, n, dtype=np.int64))
    return images_path, labels_path


def w3_configs(settings: Settings, images_path: Path, labels_path: Path) -> list[Config]:
    images = np.load(images_path, mmap_mode="r")
    labels = np.load(labels_path, mmap_mode="r")
    n = len(labels)
    torch_ds = MemmapRowDataset(images_path, labels_path)
    ferry_ds = ferry.ArrayDataset(images, labels)
    k = settings.w3_batches
    configs = [
        loader_config(
            f"torch nw=2, {k} batches",
            "torch",
            make_loader(TorchDataLoader, torch_ds, settings, 2),
            settings,
            k,
            note="__getitem__: torch.from_numpy(np.array(mm[i])), int label",
        ),
        loader_config(
            f"ferry nw=2, {k} batches",
            "ferry",
            make_loader(ferry.DataLoader, ferry_ds, settings, 2),
            settings,
            k,
            note="ferry.ArrayDataset(memmap images, memmap labels)",
        ),
        loader_config(
            "ferry nw=2, full epoch",
            "ferry",
            make_loader(ferry.DataLoader, ferry_ds, settings, 2),
            settings,
        ),
    ]
    # mode "c" (copy-on-write) maps the same page-cache pages writable, so torch takes it
    # without a read-only warning; nothing is written.
    pairs = [
        (
            torch.from_numpy(np.load(images_path, mmap_mode="c")),
            torch.empty(images.shape, dtype=torch.uint8),
        ),
        (torch.from_numpy(np.load(labels_path, mmap_mode="c")), torch.empty(n, dtype=torch.int64)),
    ]

    def copy() -> Timing:
        return time_copy(pairs, n)

    configs.append(
        Config(
            f"copy_ sequential from memmap, {torch.get_num_threads()} threads",
            "ceiling",
            copy,
            copy,
            note="whole files into preallocated tensors, "
            f"fastest of {CEILING_INNER} back-to-back copies per run",
        )
    )
    return configs


# ---------------------------------------------------------------------------- report


@dataclass
class WorkloadResult:
    name: str
    title: str
    rows: list[Row]
    notes: list[str]

    def best(self, kind: str) -> Row | None:
        of_kind = [r for r in self.rows if r.kind == kind]
        return max(of_kind, key=lambda r: r.median) if of_kind else None


def print_header(info: dict[str, Any], settings: Settings) -> None:
    print("ferry native-gather benchmark")
    print(
        f"  machine : {info['cpu']}, {info['nproc']} cpus, {info['memory_gib']} GiB, "
        f"{info['platform']}"
    )
    print(
        f"  versions: Python {info['python']}, torch {info['torch']} "
        f"({info['torch_threads']} intra-op threads), numpy {info['numpy']}, "
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
        f"median of {settings.repeats} interleaved run(s) after 1 warm-up "
        f"({settings.warmup_batches} batches), time.perf_counter"
    )
    print()


def print_table(results: Sequence[WorkloadResult]) -> None:
    head = (
        f"{'workload':<8} | {'loader':<40} | {'samples/s':>11} | {'spread':>6} | "
        f"{'vs best torch':>13} | {'% of ceiling':>12}"
    )
    print(head)
    print("-" * len(head))
    for res in results:
        torch_best, ceiling = res.best("torch"), res.best("ceiling")
        for c in res.rows:
            vs = f"{c.median / torch_best.median:.2f}x" if torch_best else "-"
            pct = f"{100 * c.median / ceiling.median:.1f}%" if ceiling else "-"
            print(
                f"{res.name:<8} | {c.name:<40} | {c.median:>11,.0f} | {c.spread_pct:>5.0f}% | "
                f"{vs:>13} | {pct:>12}"
            )
        print("-" * len(head))


def goal(value: float, target: float) -> str:
    return "met" if value >= target else "NOT met"


def w1_summary(res: WorkloadResult) -> dict[str, Any]:
    torch_best, ceiling = res.best("torch"), res.best("ceiling")
    assert torch_best is not None and ceiling is not None
    out: dict[str, Any] = {}
    print(f"{res.name}: {res.title}")
    print(f"  best torch: {torch_best.name}; ceiling: {ceiling.name}")
    needed = W1_GOAL_VS_TORCH * torch_best.median
    print(
        f"  {W1_GOAL_VS_TORCH:.0f}x best torch = {needed:,.0f} samples/s = "
        f"{100 * needed / ceiling.median:.0f}% of the ceiling on this machine"
    )
    torch_cfgs = [c for c in res.rows if c.kind == "torch"]
    for f in (c for c in res.rows if c.kind == "ferry"):
        vs_best = f.median / torch_best.median
        pct = 100 * f.median / ceiling.median
        each = {t.name: f.median / t.median for t in torch_cfgs}
        each_s = ", ".join(f"/ {k} = {v:.1f}x" for k, v in each.items())
        print(
            f"  {f.name}: {vs_best:.1f}x best torch (goal >= {W1_GOAL_VS_TORCH:.0f}x: "
            f"{goal(vs_best, W1_GOAL_VS_TORCH)}); {pct:.0f}% of ceiling "
            f"(goal >= {W1_GOAL_PCT_CEILING:.0f}%: {goal(pct, W1_GOAL_PCT_CEILING)}); {each_s}"
        )
        out[f.name] = {
            "vs_best_torch": vs_best,
            "vs_each_torch": each,
            "pct_of_ceiling": pct,
            "goal_vs_torch_met": vs_best >= W1_GOAL_VS_TORCH,
            "goal_pct_ceiling_met": pct >= W1_GOAL_PCT_CEILING,
        }
    return out


def w3_summary(res: WorkloadResult) -> dict[str, Any]:
    torch_best, ceiling = res.best("torch"), res.best("ceiling")
    assert torch_best is not None and ceiling is not None
    out: dict[str, Any] = {}
    print(f"{res.name}: {res.title}")
    for f in (c for c in res.rows if c.kind == "ferry"):
        vs = f.median / torch_best.median
        pct = 100 * f.median / ceiling.median
        print(
            f"  {f.name}: {vs:.1f}x {torch_best.name} (goal >= {W3_GOAL_VS_TORCH:.0f}x: "
            f"{goal(vs, W3_GOAL_VS_TORCH)}); {pct:.0f}% of ceiling"
        )
        out[f.name] = {
            "vs_torch": vs,
            "pct_of_ceiling": pct,
            "goal_vs_torch_met": vs >= W3_GOAL_VS_TORCH,
        }
    return out


def print_notes(results: Sequence[WorkloadResult]) -> None:
    print()
    for res in results:
        for line in res.notes:
            print(f"  note {res.name}: {line}")
        for c in res.rows:
            if c.note:
                print(f"  note {res.name} / {c.name}: {c.note}")


def to_json(res: WorkloadResult, summary: dict[str, Any]) -> dict[str, Any]:
    torch_best, ceiling = res.best("torch"), res.best("ceiling")
    rows = []
    for c in res.rows:
        rows.append(
            {
                "loader": c.name,
                "kind": c.kind,
                "samples_per_s_median": c.median,
                "runs": [{"samples": n, "seconds": s, "samples_per_s": n / s} for n, s in c.runs],
                "spread_pct": c.spread_pct,
                "ratio_vs_best_torch": c.median / torch_best.median if torch_best else None,
                "pct_of_ceiling": 100 * c.median / ceiling.median if ceiling else None,
                "note": c.note,
            }
        )
    return {
        "title": res.title,
        "notes": res.notes,
        "rows": rows,
        "summary": summary,
        "best_torch": torch_best.name if torch_best else None,
        "ceiling": ceiling.name if ceiling else None,
    }


# ------------------------------------------------------------------------------- main


def run_w1(settings: Settings) -> WorkloadResult:
    n = settings.w1_images
    with Progress("W1") as progress:
        rows = measure(w1_configs(settings), settings.repeats, progress, Row)
    return WorkloadResult(
        "W1",
        f"TensorDataset, {n:,} uint8 {'x'.join(map(str, IMAGE_SHAPE))} images + int64 labels, "
        f"in memory ({n * 3 * 32 * 32 / 1e6:.0f} MB)",
        rows,
        [
            "each loader run is one full epoch; torch nw=2 includes worker start-up (every epoch)",
            "ceiling = the same bytes (images+labels) copied with a plain sequential copy_ into "
            f"preallocated tensors in this process; each run is the fastest of {CEILING_INNER} "
            "back-to-back copies; the ceiling is the faster of the two thread settings",
        ],
    )


def run_w3(settings: Settings) -> WorkloadResult:
    n = settings.w3_images
    with (
        Progress("W3", 1) as progress,
        tempfile.TemporaryDirectory(prefix="ferry-bench-", dir=TMP_ROOT) as tmp,
    ):
        progress.step(f"writing {n:,} images to a memmap")
        start = time.perf_counter()
        images_path, labels_path = write_memmap(Path(tmp), n, settings.seed)
        write_s = time.perf_counter() - start
        size_gb = (images_path.stat().st_size + labels_path.stat().st_size) / 1e9
        # The configs (and their memory maps) die here, before the files are deleted.
        configs = w3_configs(settings, images_path, labels_path)
        rows = measure(configs, settings.repeats, progress, Row)
        del configs
    return WorkloadResult(
        "W3",
        f"np.memmap on disk, {n:,} uint8 images + labels, {size_gb:.2f} GB, warm page cache",
        rows,
        [
            f"files written to a temp dir under {TMP_ROOT} in {write_s:.1f} s and deleted after",
            "warm page cache: the file was just written, so reads come from RAM, not the disk",
            f"torch and ferry '{settings.w3_batches} batches' rows time the first "
            f"{settings.w3_batches} batches of an epoch (start-up included)",
        ],
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repeat (< 1 min)")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    p.add_argument("--workloads", default="W1,W3", help="comma-separated: W1,W3")
    p.add_argument("--repeats", type=int, help="measured runs per config (default 3, quick 1)")
    return p.parse_args(argv)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so temp files are deleted


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.from_args(args)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    start = time.perf_counter()
    info = machine_info()
    print_header(info, settings)
    runners = {"W1": run_w1, "W3": run_w3}
    results = [runners[w](settings) for w in settings.workloads]
    print_table(results)
    summaries = {"W1": w1_summary, "W3": w3_summary}
    print()
    out = {r.name: to_json(r, summaries[r.name](r)) for r in results}
    print_notes(results)
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
