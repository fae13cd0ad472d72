"""What the image datasets share: a list of (path, target) samples, loaded by the native
pixel pipeline where it can reproduce the transform, else by PIL and the transform."""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import _ext
from ._plan import CompiledTransform, Op, compile_transform


def pil_loader(path: str) -> Image.Image:
    """The image at `path`, decoded by Pillow and converted to RGB."""
    with open(path, "rb") as f:  # an open file, so that Pillow closes it (Pillow#835)
        img = Image.open(f)
        return img.convert("RGB")


def default_loader(path: str) -> Image.Image:
    """torchvision's default loader (its PIL backend): Pillow, converted to RGB. Datasets
    with this loader may decode natively, with the same pixels."""
    return pil_loader(path)


# The formats the native decoders are built for (issue 15), where the extension does not
# say which it was built with.
_DEFAULT_CODECS = frozenset({"jpeg", "png"})
_UNKNOWN, _NOT_NATIVE = -1, -2
DECODE_MODES = ("exact", "fast")


def _native_module() -> Any:
    """ferry._C where it has the image pipeline, else None (PIL does the work)."""
    module = _ext.load()
    return module if hasattr(module, "load_image") else None


class ImageSamples(torch.utils.data.Dataset):
    """A map-style dataset of ``(image, target)`` from a list of (path, target) samples.

    ``ds[i]`` loads ``samples[i]``: with the default loader and a transform that ferry's
    native pipeline reproduces (ferry.vision transforms ending in a tensor), C++ decodes
    and transforms it, drawing the transform's random parameters from torch's RNG as the
    Python transforms would; otherwise ``loader(path)`` then ``transform(image)``. Either
    way the sample is the same. ``target_transform`` is applied after the transform.

    ``decode="fast"`` (off by default) trades exactness for speed where C++ decodes a
    JPEG: the decoder scales it down in the DCT domain by the smallest M/8 that keeps the
    crop at least the resize's size, with libjpeg's fast integer IDCT and plain chroma
    upsampling, before the exact resize. Pixels then differ from PIL's by about 1/255
    on average (tens of levels at sharp edges); BENCHMARKS.md has the measured figures.
    PNGs, files PIL decodes, and a dataset whose samples take the Python path decode
    exactly either way.
    """

    def __init__(
        self,
        samples: list[tuple[str, Any]],
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        loader: Callable[[str], Any] = default_loader,
        *,
        decode: str = "exact",
    ) -> None:
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        self.decode = decode
        self.samples = samples
        self.transform = transform
        self.target_transform = target_transform
        self.loader = loader
        self._size_keys: np.ndarray | None = None  # hash(path) per index
        self._sizes: np.ndarray | None = None  # (width, height) per index; -1 unknown

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        path, target = self.samples[index]
        sample = self._load(index, path)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def native_sample(self, index: int) -> tuple[str, list[Op], Any] | None:
        """(path, ops, target) of sample `index` for the native pipeline, its random
        parameters drawn now from torch's RNG (then target_transform applied), as
        ``self[index]`` would draw them; the image is not decoded (its size comes from its
        header, cached). None, with nothing drawn, where the sample takes the Python path
        (``self[index]`` then does all of it)."""
        planned = self.native_plan(index, self.compiled_transform())
        return None if planned is None else planned[:3]

    def native_plan(self, index: int, compiled: CompiledTransform | None
                    ) -> tuple[str, list[Op], Any, tuple[int, int]] | None:
        """native_sample with the transform already compiled (once for a batch, by
        ferry's image path), and the file's (width, height) beside the ops."""
        path, target = self.samples[index]
        size = None if compiled is None else self._native_size(index)
        if size is None:
            return None
        ops = compiled.draw(*size)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return path, ops, target, size

    @property
    def fast(self) -> bool:
        """Whether the native decoders run in the declared-inexact fast mode."""
        return self.decode == "fast"

    def supports_native(self) -> bool:
        """Whether native_sample can describe this dataset's samples: the default loader
        and a transform the native pipeline reproduces (files in formats its decoders
        lack still take the Python path, one by one)."""
        return self.compiled_transform() is not None

    def _native_size(self, index: int) -> tuple[int, int] | None:
        """(width, height) of sample `index` from its file's header, cached per sample;
        None where the native pipeline does not decode the file (the Python path then
        reports what is wrong with it)."""
        index = self._position(index)
        path = self.samples[index][0]
        keys, sizes = self._size_cache()
        key = hash(path)
        width, height = (int(v) for v in sizes[index])
        if keys[index] == key and width != _UNKNOWN:
            return None if width == _NOT_NATIVE else (width, height)
        size = _header_size(path)
        sizes[index] = size if size is not None else (_NOT_NATIVE, _NOT_NATIVE)
        keys[index] = key
        return size

    def _load(self, index: int, path: str) -> Any:
        native = _native_module()
        compiled = self.compiled_transform() if native is not None else None
        size = None if compiled is None else self._native_size(index)
        if size is not None:
            ops = compiled.draw(*size)
            return native.load_image(path, ops, self._position(index), fast=self.fast)
        sample = self.loader(path)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def compiled_transform(self) -> CompiledTransform | None:
        """The transform compiled for the native pipeline (what native_plan takes), or
        None where it runs in Python: the native pipeline decodes as the default loader
        does, so another loader is the user's own."""
        if self.loader is not default_loader and self.loader is not pil_loader:
            return None
        return compile_transform(self.transform)

    def _position(self, index: int) -> int:
        index = operator.index(index)
        return index + len(self.samples) if index < 0 else index

    def _size_cache(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.samples)
        if self._sizes is None or len(self._sizes) != n:
            # arrays, not a dict: small, and not copied page by page in forked workers
            self._size_keys = np.zeros(n, dtype=np.int64)
            self._sizes = np.full((n, 2), _UNKNOWN, dtype=np.int32)
        return self._size_keys, self._sizes

    def __getstate__(self) -> dict[str, Any]:
        # hash() differs between processes: another process reads the headers again
        return {**self.__dict__, "_size_keys": None, "_sizes": None}

    def __repr__(self) -> str:
        lines = [f"Dataset {type(self).__name__}", f"    Number of datapoints: {len(self)}"]
        root = getattr(self, "root", None)
        if root is not None:
            lines.append(f"    Root location: {root}")
        if self.transform is not None:
            lines.append(f"    Transform: {self.transform!r}".replace("\n", "\n    "))
        if self.target_transform is not None:
            lines.append(f"    Target transform: {self.target_transform!r}")
        return "\n".join(lines)


def _header_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the file's header where the native pipeline decodes it."""
    native = _ext.load()
    info = getattr(native, "image_info", None)
    if info is not None:
        try:
            width, height = info(path)
        except (ValueError, RuntimeError, OSError):
            return None  # not a format it decodes, or broken: PIL says which
        return int(width), int(height)
    codecs = native.image_codecs() if hasattr(native, "image_codecs") else _DEFAULT_CODECS
    try:
        with Image.open(os.fspath(path)) as img:  # lazy: reads the header only
            fmt, size = (img.format or "").lower(), img.size
    except Exception:  # whatever Pillow raises, the Python path raises it again
        return None
    return size if fmt in codecs else None
