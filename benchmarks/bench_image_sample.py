#!/usr/bin/env python3
"""One image sample, one thread: decode a ~500 px JPEG, RandomResizedCrop-style crop,
resize to 224 (BILINEAR), as PIL does it in Python against ferry._C.load_image, with the
same crops. Prints ms per sample and the ratio; then the same with ToTensor + Normalize.

    PYTHONPATH=python python3 benchmarks/bench_image_sample.py [--samples N] [--repeats R]
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image
from skimage import data as skdata

from ferry import _ext

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def make_photos(root: Path) -> list[Path]:
    """ImageNet-like files: ~500 px on the long side, JPEG quality 75-95, 4:2:0."""
    out = []
    for k, name in enumerate(("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")):
        im = Image.fromarray(getattr(skdata, name)())
        scale = 500 / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
        path = root / f"{name}.jpg"
        im.save(path, "JPEG", quality=75 + 5 * k)
        out.append(path)
    return out


def random_resized_crop(width: int, height: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (scale 0.08-1, ratio 3/4-4/3)."""
    area = width * height
    log_ratio = torch.log(torch.tensor((3 / 4, 4 / 3)))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(0.08, 1.0, generator=g).item()
        ratio = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g).item())
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
            return top, left, h, w
    side = min(width, height)
    return (height - side) // 2, (width - side) // 2, side, side


def pil_sample(path: Path, crop, normalize: bool):
    top, left, h, w = crop
    with Image.open(path) as im:
        img = (
            im.convert("RGB")
            .crop((left, top, left + w, top + h))
            .resize((224, 224), Image.BILINEAR)
        )
    if not normalize:
        return np.asarray(img)
    x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).contiguous().float().div(255)
    return x.sub_(torch.tensor(MEAN).view(-1, 1, 1)).div_(torch.tensor(STD).view(-1, 1, 1))


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _C = _ext.load()
    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, Pillow {PIL.__version__}, ferry codecs {_C.image_codecs()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(Path(tmp))
        sizes = {p: Image.open(p).size for p in photos}
        g = torch.Generator().manual_seed(0)
        work = []
        for k in range(args.samples):
            p = photos[k % len(photos)]
            work.append((p, random_resized_crop(*sizes[p], g)))
        for normalize in (False, True):
            stage = ("to_tensor", MEAN, STD) if normalize else ("hwc",)

            def ferry_run(fast: bool, stage: tuple = stage) -> None:
                for p, (top, left, h, w) in work:
                    ops = [("crop", top, left, h, w), ("resize", 224, 224, 2), stage]
                    _C.load_image(str(p), ops, fast=fast)

            def pil_run(normalize: bool = normalize) -> None:
                for p, crop in work:
                    pil_sample(p, crop, normalize)

            pil = best_of(args.repeats, pil_run)
            exact = best_of(args.repeats, lambda: ferry_run(False))
            fast = best_of(args.repeats, lambda: ferry_run(True))
            what = "decode+crop+resize+ToTensor+Normalize" if normalize else "decode+crop+resize"
            n = len(work)
            print(
                f"{what}: PIL {1e3 * pil / n:.2f} ms/sample, ferry exact {1e3 * exact / n:.2f} "
                f"ms ({pil / exact:.2f}x), ferry fast {1e3 * fast / n:.2f} ms ({pil / fast:.2f}x)"
            )


if __name__ == "__main__":
    main()
