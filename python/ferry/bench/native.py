"""W1 and W3: ferry's native gather over arrays against torch's DataLoader.

W1: a TensorDataset of uint8 3x32x32 images (random bytes) + int64 labels, in memory.
W3: the same kind of images in an on-disk np.memmap (>= 1 GB; warm page cache).

Both are shown against torch and against a plain-copy ceiling measured in the same run.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, Dataset, RandomSampler, TensorDataset
from torch.utils.data import DataLoader as TorchDataLoader

import ferry

from .common import (
    WITH_CEILING,
    Config,
    Progress,
    Result,
    Run,
    Settings,
    Workload,
    goal,
    kind_of,
    loader_config,
    loader_kwargs,
    measure,
)

IMAGE_SHAPE = (3, 32, 32)
W1_GOAL_VS_TORCH = 25.0
W1_GOAL_PCT_CEILING = 80.0
W3_GOAL_VS_TORCH = 10.0
TMP_ROOT = "/tmp"
CEILING_INNER = 5


def random_images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *IMAGE_SHAPE), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), dtype=torch.int64, generator=g)
    return images, labels


def time_copy(pairs: Sequence[tuple[Tensor, Tensor]], samples: int) -> Run:
    """A plain `dst.copy_(src)` of each pair, back to back; the fastest of
    CEILING_INNER such passes (a ceiling is what a copy can reach: noise only lowers it)."""
    best = float("inf")
    for _ in range(CEILING_INNER):
        start = time.perf_counter()
        for src, dst in pairs:
            dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return Run(samples, best)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def copy_config(name: str, pairs: Sequence[tuple[Tensor, Tensor]], n: int, threads: int,
                note: str = "") -> Config:
    def run() -> Run:
        with torch_threads(threads):
            return time_copy(pairs, n)

    return Config(name, "ceiling", run, run, note)


def sampler_config(n: int, settings: Settings) -> Config:
    """The main thread's share of any loader: torch's RandomSampler + BatchSampler."""

    def run() -> Run:
        gen = torch.Generator().manual_seed(settings.seed)
        sampler = BatchSampler(RandomSampler(range(n), generator=gen), settings.batch_size, False)
        start = time.perf_counter()
        samples = sum(len(b) for b in sampler)
        return Run(samples, time.perf_counter() - start)

    return Config(
        "torch sampler only (indices)", "reference", run, run,
        note="RandomSampler+BatchSampler in Python, no data; single-threaded pure Python, "
        "so a large spread here means the machine was busy",
    )


def shuffled_gather(pairs: Sequence[tuple[Tensor, Tensor]], n: int, settings: Settings) -> Config:
    """The same bytes gathered in a shuffled order, whole epoch in one call per tensor."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed))

    def run() -> Run:
        start = time.perf_counter()
        for src, dst in pairs:
            torch.index_select(src, 0, perm, out=dst)
        return Run(n, time.perf_counter() - start)

    return Config("index_select shuffled, out=", "reference", run, run,
                  note=f"torch intra-op threads {torch.get_num_threads()}")


def w1_configs(n: int, settings: Settings) -> list[Config]:
    images, labels = random_images(n, settings.seed)
    dataset = TensorDataset(images, labels)
    configs = [
        loader_config(
            f"{kind_of(cls)} nw={w}", kind_of(cls),
            lambda cls=cls, w=w: cls(dataset, **loader_kwargs(settings, w)),
            settings.warmup_batches,
        )
        for w in (0, 2)
        for cls in (TorchDataLoader, ferry.DataLoader)
    ]
    # The same shuffled batches as index lists drawn before timing: ferry without the
    # main thread's share of torch's sampler, to show what that share costs.
    gen = torch.Generator().manual_seed(settings.seed)
    drawn = list(BatchSampler(RandomSampler(dataset, generator=gen), settings.batch_size, False))
    configs.append(loader_config(
        "ferry nw=2, indices drawn ahead", "reference",
        lambda: ferry.DataLoader(dataset, batch_sampler=drawn, num_workers=2),
        settings.warmup_batches,
        note="batch_sampler = a list of the shuffled index batches, made before timing",
    ))
    pairs = [(images, torch.empty_like(images)), (labels, torch.empty_like(labels))]
    threads = torch.get_num_threads()
    return [
        *configs,
        copy_config(f"copy_ sequential, {threads} threads", pairs, n, threads),
        copy_config("copy_ sequential, 1 thread", pairs, n, 1),
        shuffled_gather(pairs, n, settings),
        sampler_config(n, settings),
    ]


def run_w1(settings: Settings, progress: Progress) -> Result:
    n = 20_000 if settings.quick else 100_000
    res = Result(
        "W1",
        f"TensorDataset, {n:,} uint8 {'x'.join(map(str, IMAGE_SHAPE))} images + int64 labels, "
        f"in memory ({n * 3 * 32 * 32 / 1e6:.0f} MB)",
        measure(w1_configs(n, settings), settings.repeats, progress),
        [
            "each loader run is one full epoch; torch nw=2 includes worker start-up (every epoch)",
            "ceiling = the same bytes (images+labels) copied with a plain sequential copy_ into "
            f"preallocated tensors in this process; each run is the fastest of {CEILING_INNER} "
            "back-to-back copies; the ceiling is the faster of the two thread settings",
        ],
        WITH_CEILING,
    )
    best, ceiling = res.best("torch"), res.best("ceiling")
    assert best is not None and ceiling is not None
    res.lines.append(f"  best torch: {best.name}; ceiling: {ceiling.name}")
    needed = W1_GOAL_VS_TORCH * best.median
    res.lines.append(
        f"  {W1_GOAL_VS_TORCH:.0f}x best torch = {needed:,.0f} samples/s = "
        f"{100 * needed / ceiling.median:.0f}% of the ceiling on this machine"
    )
    torch_rows = [r for r in res.rows if r.kind == "torch"]
    for f in (r for r in res.rows if r.kind == "ferry"):
        vs, pct = f.median / best.median, 100 * f.median / ceiling.median
        each = {t.name: f.median / t.median for t in torch_rows}
        res.summarize(
            f"  {f.name}: {vs:.1f}x best torch (goal >= {W1_GOAL_VS_TORCH:.0f}x: "
            f"{goal(vs >= W1_GOAL_VS_TORCH)}); {pct:.0f}% of ceiling (goal >= "
            f"{W1_GOAL_PCT_CEILING:.0f}%: {goal(pct >= W1_GOAL_PCT_CEILING)}); "
            + ", ".join(f"/ {k} = {v:.1f}x" for k, v in each.items()),
            vs_best_torch=vs,
            vs_each_torch=each,
            pct_of_ceiling=pct,
            goal_vs_torch_met=vs >= W1_GOAL_VS_TORCH,
            goal_pct_ceiling_met=pct >= W1_GOAL_PCT_CEILING,
        )
    return res


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


def w3_configs(settings: Settings, images_path: Path, labels_path: Path,
               batches: int) -> list[Config]:
    n = len(np.load(labels_path, mmap_mode="r"))
    torch_ds = MemmapRowDataset(images_path, labels_path)
    ferry_ds = ferry.ArrayDataset(np.load(images_path, mmap_mode="r"),
                                  np.load(labels_path, mmap_mode="r"))

    def loader(cls: type[TorchDataLoader], ds: Dataset[Any]) -> Callable[[], TorchDataLoader]:
        return lambda: cls(ds, **loader_kwargs(settings, 2))

    warm = settings.warmup_batches
    # mode "c" (copy-on-write) maps the same page-cache pages writable, so torch takes it
    # without a read-only warning; nothing is written.
    images = torch.from_numpy(np.load(images_path, mmap_mode="c"))
    labels = torch.from_numpy(np.load(labels_path, mmap_mode="c"))
    pairs = [(images, torch.empty_like(images)), (labels, torch.empty_like(labels))]
    threads = torch.get_num_threads()
    return [
        loader_config(f"torch nw=2, {batches} batches", "torch",
                      loader(TorchDataLoader, torch_ds), warm, batches,
                      note="__getitem__: torch.from_numpy(np.array(mm[i])), int label"),
        loader_config(f"ferry nw=2, {batches} batches", "ferry",
                      loader(ferry.DataLoader, ferry_ds), warm, batches,
                      note="ferry.ArrayDataset(memmap images, memmap labels)"),
        loader_config("ferry nw=2, full epoch", "ferry", loader(ferry.DataLoader, ferry_ds), warm),
        copy_config(f"copy_ sequential from memmap, {threads} threads", pairs, n, threads,
                    note="whole files into preallocated tensors, "
                    f"fastest of {CEILING_INNER} back-to-back copies per run"),
    ]


def run_w3(settings: Settings, progress: Progress) -> Result:
    n = 65_000 if settings.quick else 350_000  # 350,000 x 3 KiB = 1.07 GB
    batches = 100 if settings.quick else 300  # torch over a memmap is slow: a fixed number
    with tempfile.TemporaryDirectory(prefix="ferry-bench-", dir=TMP_ROOT) as tmp:
        progress.add(1)
        progress.step(f"writing {n:,} images to a memmap")
        start = time.perf_counter()
        images_path, labels_path = write_memmap(Path(tmp), n, settings.seed)
        write_s = time.perf_counter() - start
        size_gb = (images_path.stat().st_size + labels_path.stat().st_size) / 1e9
        # The configs (and their memory maps) die here, before the files are deleted.
        rows = measure(w3_configs(settings, images_path, labels_path, batches),
                       settings.repeats, progress)
    res = Result(
        "W3",
        f"np.memmap on disk, {n:,} uint8 images + labels, {size_gb:.2f} GB, warm page cache",
        rows,
        [
            f"files written to a temp dir under {TMP_ROOT} in {write_s:.1f} s and deleted after",
            "warm page cache: the file was just written, so reads come from RAM, not the disk",
            f"torch and ferry '{batches} batches' rows time the first {batches} batches of an "
            "epoch (start-up included)",
        ],
        WITH_CEILING,
    )
    best, ceiling = res.best("torch"), res.best("ceiling")
    assert best is not None and ceiling is not None
    for f in (r for r in res.rows if r.kind == "ferry"):
        vs, pct = f.median / best.median, 100 * f.median / ceiling.median
        res.summarize(
            f"  {f.name}: {vs:.1f}x {best.name} (goal >= {W3_GOAL_VS_TORCH:.0f}x: "
            f"{goal(vs >= W3_GOAL_VS_TORCH)}); {pct:.0f}% of ceiling",
            vs_torch=vs,
            pct_of_ceiling=pct,
            goal_vs_torch_met=vs >= W3_GOAL_VS_TORCH,
        )
    return res


WORKLOADS = (
    Workload("W1", "TensorDataset in memory: the native gather against torch and a plain copy",
             run_w1),
    Workload("W3", "np.memmap on disk (warm page cache): the native gather against torch",
             run_w3),
)
