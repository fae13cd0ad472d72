"""W4 and W5: images from files, ferry.vision's C++ pipeline against torch's DataLoader
over the PyTorch tutorial's dataset (PIL decode and torchvision's transforms in Python).

W4: an ImageNet-like folder (~500 px long side, JPEG quality 75..95, made from
    scikit-image's sample photographs), RandomResizedCrop(224) + RandomHorizontalFlip +
    ToTensor + Normalize, batch size 64.
W5: FashionMNIST-like 28x28 grayscale PNGs (crops of the same photographs),
    Grayscale + ToTensor + Normalize, batch size 256.

torch's side uses torchvision's transforms where torchvision imports, else
ferry.vision.transforms on PIL images (torchvision's semantics, Pillow's pixels, in
Python): the note of each run says which.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import Dataset

import ferry

from .common import (
    THROUGHPUT,
    Column,
    Config,
    Progress,
    Result,
    Row,
    Settings,
    Workload,
    goal,
    loader_config,
    loader_kwargs,
    measure,
    runs,
)

TMP_ROOT = "/tmp"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
W4_GOAL_EXACT, W4_GOAL_FAST, W5_GOAL = 2.5, 4.0, 8.0
W4_BATCH, W5_BATCH = 64, 256
TORCH_WORKERS = (0, 1, 2)


def _transforms() -> tuple[Any, str]:
    """torchvision.transforms where it imports, else ferry.vision.transforms (the same
    semantics on PIL images), and which it is."""
    try:
        from torchvision import transforms  # type: ignore[import-untyped]

        return transforms, "torchvision.transforms"
    except Exception:  # not installed, or a wheel that needs a CUDA torch
        from ferry.vision import transforms

        return transforms, "ferry.vision.transforms on PIL images (torchvision not importable)"


def w4_transform(t: Any) -> Any:
    return t.Compose([t.RandomResizedCrop(224), t.RandomHorizontalFlip(), t.ToTensor(),
                      t.Normalize(MEAN, STD)])


def w5_transform(t: Any) -> Any:
    return t.Compose([t.Grayscale(), t.ToTensor(), t.Normalize([0.5], [0.5])])


class TutorialImages(Dataset[tuple[torch.Tensor, int]]):
    """The PyTorch tutorial's custom dataset: a list of (file, label); PIL opens and
    converts each image to RGB (as torchvision's default loader does), then the
    transform. Module level, so that spawned workers can import it."""

    def __init__(self, samples: list[tuple[str, int]], transform: Any) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        with open(path, "rb") as f:
            image = Image.open(f).convert("RGB")
        return self.transform(image), label


# ------------------------------------------------------------------------------ data


def photographs() -> list[np.ndarray]:
    """scikit-image's bundled colour photographs (RGB uint8), as shipped with the package."""
    from skimage import data

    names = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "motorcycle_left")
    found = []
    for name in names:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # absent from this version, or would have to be downloaded
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            found.append(np.ascontiguousarray(image[..., :3]))
    if not found:
        raise SystemExit("W4/W5 need scikit-image's sample photographs: pip install scikit-image")
    return found


def write_imagenet_like(root: Path, n: int, classes: int, seed: int) -> None:
    """`n` JPEGs in `classes` folders: random crops of the photographs (a third to all of
    each side), scaled so that the long side is 400..500 px, quality 75..95."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in photographs()]
    for c in range(classes):
        (root / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = (int(rng.integers(s // 3, s + 1)) for s in (w, h))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        long_side = int(rng.integers(400, 501))
        scale = long_side / max(cw, ch)
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        image = photo.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
        image.save(root / f"class{i % classes:03d}" / f"{i:06d}.jpg",
                   quality=int(rng.integers(75, 96)))


def write_mnist_like(root: Path, n: int, classes: int, seed: int) -> None:
    """`n` 28x28 grayscale PNGs in `classes` folders: random crops of the photographs,
    scaled down."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p).convert("L").reduce(4) for p in photographs()]
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(rng.integers(28, min(w, h) // 2))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        image = photo.crop((x, y, x + side, y + side)).resize((28, 28), Image.BILINEAR)
        image.save(root / f"class{i % classes:02d}" / f"{i:06d}.png")


def image_configs(settings: Settings, folder: Path, transform: Callable[[Any], Any],
                  batch_size: int, ferry_rows: dict[str, tuple[int, dict[str, Any]]]
                  ) -> list[Config]:
    t, which = _transforms()
    samples = ferry.vision.ImageFolder(folder).samples
    tutorial = TutorialImages(samples, transform(t))

    def kwargs(workers: int) -> dict[str, Any]:
        return loader_kwargs(settings, workers, batch_size=batch_size)

    configs = [
        loader_config(f"torch nw={w}", "torch",
                      lambda w=w: TorchDataLoader(tutorial, **kwargs(w)), settings.warmup_batches,
                      note=f"the tutorial's dataset: PIL open + convert('RGB'), {which}")
        for w in TORCH_WORKERS
    ]
    for name, (workers, extra) in ferry_rows.items():
        ds = ferry.vision.ImageFolder(folder, transform=transform(ferry.vision.transforms),
                                      **extra)
        configs.append(loader_config(
            name, "ferry", lambda ds=ds, w=workers: ferry.DataLoader(ds, **kwargs(w)),
            settings.warmup_batches, note="ferry.vision.ImageFolder + ferry.vision.transforms"))
    return configs


PER_CORE = Column("img/s per core", "samples_per_cpu_s",
                  lambda r, _: per_cpu_second(r), ",.0f", width=8)


def per_cpu_second(row: Row) -> float | None:
    """Images per CPU second (all threads and worker processes): images/s per busy core."""
    cpu = statistics.median(r.cpu_s for r in row.runs)
    return row.runs[0].samples / cpu if cpu > 0 else None


def _workload(name: str, title: str, settings: Settings, progress: Progress,
              write: Callable[[Path], None], transform: Callable[[Any], Any],
              batch_size: int, ferry_rows: dict[str, tuple[int, dict[str, Any]]]) -> Result:
    with tempfile.TemporaryDirectory(prefix="ferry-bench-", dir=TMP_ROOT) as tmp:
        folder = Path(tmp)
        progress.add(1)
        progress.step("writing the images")
        start = time.perf_counter()
        write(folder)
        write_s = time.perf_counter() - start
        written = [p for p in folder.rglob("*") if p.is_file()]
        files, size_mb = len(written), sum(p.stat().st_size for p in written) / 1e6
        rows = measure(image_configs(settings, folder, transform, batch_size, ferry_rows),
                       settings.repeats, progress)
    return Result(
        name,
        f"{title}: {files:,} files, {size_mb:.0f} MB, batch size {batch_size}",
        rows,
        [
            f"files written to a temp dir under {TMP_ROOT} in {write_s:.1f} s and deleted "
            "after; warm page cache",
            "each run is one full epoch of a fresh loader, worker start-up included",
            "img/s per core = images / CPU seconds of the process and its workers "
            f"({os.cpu_count()} cores here)",
        ],
        (*THROUGHPUT, PER_CORE),
    )


def summarize(res: Result, goals: dict[str, float]) -> Result:
    """Each goal's row against the best torch row, with its images per CPU second."""
    best = res.best("torch")
    assert best is not None
    for name, target in goals.items():
        row = res.row(name)
        assert row is not None
        vs, per_core = row.median / best.median, per_cpu_second(row)
        res.summarize(f"  {name}: {vs:.2f}x {best.name} (goal >= {target}x: "
                      f"{goal(vs >= target)}); {per_core or 0:,.0f} img/s per core",
                      vs_best_torch=vs, goal=target, goal_met=vs >= target,
                      images_per_cpu_s=per_core)
    return res


def _batch(settings: Settings, default: int) -> int:
    return settings.args.batch_size or default


def run_w4(settings: Settings, progress: Progress) -> Result:
    n = _files(settings, 384 if settings.quick else 1536)
    ferry_rows = {
        "ferry nw=2": (2, {}),
        "ferry nw=2, decode='fast'": (2, {"decode": "fast"}),
        "ferry nw=0": (0, {}),
    }
    res = _workload(
        "W4", "ImageNet-like JPEG folder (~500 px), RandomResizedCrop(224)+flip+ToTensor+"
        "Normalize", settings, progress,
        lambda root: write_imagenet_like(root, n, 16, settings.seed), w4_transform,
        _batch(settings, W4_BATCH), ferry_rows)
    return summarize(res, {"ferry nw=2": W4_GOAL_EXACT,
                           "ferry nw=2, decode='fast'": W4_GOAL_FAST})


def run_w5(settings: Settings, progress: Progress) -> Result:
    n = _files(settings, 10_240 if settings.quick else 30_720)
    res = _workload(
        "W5", "FashionMNIST-like 28x28 grayscale PNGs, Grayscale+ToTensor+Normalize",
        settings, progress, lambda root: write_mnist_like(root, n, 10, settings.seed),
        w5_transform, _batch(settings, W5_BATCH),
        {"ferry nw=2": (2, {}), "ferry nw=0": (0, {})})
    return summarize(res, {"ferry nw=2": W5_GOAL, "ferry nw=0": W5_GOAL})


def _files(settings: Settings, default: int) -> int:
    return getattr(settings.args, "images", None) or default


def _options(group: Any) -> None:
    group.add_argument("--images", type=int,
                       help="files written for each of W4 and W5 (default W4 1,536, W5 30,720; "
                       "with --quick 384 and 10,240)")


def _codecs(settings: Settings) -> str | None:
    codecs = ferry.backend_info().get("image_codecs") or {}
    return None if {"jpeg", "png"} <= set(codecs) else (
        f"ferry was built without libjpeg/libpng (codecs: {sorted(codecs) or 'none'})")


WORKLOADS = (
    Workload("W4", "ImageNet-like JPEGs, RandomResizedCrop+flip+ToTensor+Normalize: "
             "ferry.vision against the tutorial's PIL dataset",
             run_w4, runs(3, 1), _codecs, _options),
    Workload("W5", "28x28 grayscale PNGs, Grayscale+ToTensor+Normalize: ferry.vision "
             "against the tutorial's PIL dataset",
             run_w5, runs(3, 1), _codecs, _options),
)
