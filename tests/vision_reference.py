"""Test helpers for ferry.vision: an interpreter of the native pipeline's op list in plain
Pillow and torch (what the C++ pipeline must compute, per the interface), a stand-in for
the C++ entry points built on it, and image folders made from scikit-image's sample
photographs (written at test time, never committed)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

# ---------------------------------------------------------------------------------------
# The op list, interpreted


def apply_op(img: Image.Image, op: tuple) -> Image.Image:
    kind = op[0]
    if kind == "crop":
        _, top, left, height, width = op
        return img.crop((left, top, left + width, top + height))
    if kind == "pad":
        _, left, top, right, bottom, fill = op
        return ImageOps.expand(img, (left, top, right, bottom), fill=(fill,) * len(img.getbands()))
    if kind == "resize":
        _, height, width, interp = op
        return img.resize((width, height), interp)
    if kind == "hflip":
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if kind == "vflip":
        return img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if kind == "gray":
        gray = img.convert("L")
        return gray if op[1] == 1 else gray.convert("RGB")
    raise AssertionError(f"unknown op {op!r}")


def tensor_stage(img: Image.Image, op: tuple) -> torch.Tensor:
    chw = torch.from_numpy(np.array(img)).view(img.height, img.width, -1).permute(2, 0, 1)
    if op == ("pil_to_tensor",):
        return chw.contiguous()
    assert op[0] == "to_tensor" and len(op) in (1, 3), op
    x = chw.to(torch.float32) / 255
    if len(op) == 3:
        mean = torch.tensor(op[1], dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(op[2], dtype=torch.float32).view(-1, 1, 1)
        x = (x - mean) / std
    return x


def apply_ops(img: Image.Image, ops: list[tuple]) -> torch.Tensor:
    """The sample the op list describes, for an RGB image."""
    for op in ops[:-1]:
        img = apply_op(img, op)
    return tensor_stage(img, ops[-1])


class FakeNative:
    """ferry._C's image entry points as the interface specifies them, computed by
    apply_ops: lets tests run the datasets' native dispatch before the C++ exists."""

    def __init__(self, with_info: bool = True) -> None:
        self.info_calls: list[str] = []
        self.load_calls: list[tuple[str, list, int]] = []
        if not with_info:
            self.image_info = None

    def image_info(self, path: str) -> tuple[int, int]:
        self.info_calls.append(path)
        with Image.open(path) as img:
            if img.format not in ("JPEG", "PNG"):
                raise ValueError(f"{path}: not a JPEG or PNG file")
            return img.size

    def image_codecs(self) -> dict[str, str]:
        return {"jpeg": "fake", "png": "fake"}

    def load_image(self, path: str, ops: list, sample_index: int = -1, *,
                   fast: bool = False) -> torch.Tensor:
        # fast: the exact pixels (the declared-inexact mode may give those too)
        self.load_calls.append((path, ops, sample_index))
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return apply_ops(img, ops)

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if value is None:  # a missing entry point: hasattr() says False
            raise AttributeError(name)
        return value


# ---------------------------------------------------------------------------------------
# Photographs


def photos() -> dict[str, np.ndarray]:
    """scikit-image's bundled sample photographs, RGB (and one grayscale)."""
    from skimage import data

    return {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "camera": data.camera(),
    }


def scaled(array: np.ndarray, long_side: int = 500) -> Image.Image:
    img = Image.fromarray(array)
    scale = long_side / max(img.size)
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)


def write_image_folder(root: str, per_class: int = 3) -> dict[str, list[str]]:
    """An ImageNet-like folder: one class per photograph, `per_class` JPEGs each (~500 px
    long side, quality 75..95, different crops), plus a few PNGs in other modes. Returns
    the files written per class."""
    written: dict[str, list[str]] = {}
    rng = np.random.default_rng(15)
    for name, array in photos().items():
        base = scaled(array)
        os.makedirs(os.path.join(root, name), exist_ok=True)
        files = []
        for k in range(per_class):
            w, h = base.size
            dx, dy = (int(v) for v in rng.integers(0, 60, size=2))
            img = base.crop((dx, dy, w - (k * 37) % 90, h - (k * 23) % 70))
            path = os.path.join(root, name, f"{name}_{k}.jpg")
            img.save(path, quality=int(rng.integers(75, 96)))
            files.append(path)
        written[name] = files
    extra = {
        "gray.png": scaled(photos()["camera"], 300).convert("L"),
        "palette.png": scaled(photos()["chelsea"], 320).convert("P"),
        "alpha.PNG": scaled(photos()["coffee"], 280).convert("RGBA"),
    }
    for fname, img in extra.items():
        path = os.path.join(root, "chelsea", fname)
        img.save(path)
        written["chelsea"].append(path)
    cmyk = os.path.join(root, "coffee", "cmyk.JPEG")
    scaled(photos()["coffee"], 260).convert("CMYK").save(cmyk, quality=90)
    written["coffee"].append(cmyk)
    return written
