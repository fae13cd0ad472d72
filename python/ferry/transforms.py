"""Image transforms for batches already on their device: dtype conversion with scaling,
per-channel normalisation and a channels-first/last layout change, in one CUDA kernel
where ferry was built with its kernels and in torch ops everywhere else."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import torch

from . import _ext

__all__ = ["ImageTransform"]

Layout = Literal["channels_first", "channels_last"]

_LAYOUTS = (None, "channels_first", "channels_last")
_OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_KERNEL_INPUT_DTYPES = (torch.uint8, torch.float32, torch.float16, torch.bfloat16)


class ImageTransform:
    """``out = ((x.float() * scale - mean[c]) / std[c]).to(dtype)``, with a layout change.

    ``x`` is a batch of images (4-D) or one image (3-D) of an integer or floating dtype.
    Its channels are at dim 1 of ``(N, C, H, W)`` (dim 0 of ``(C, H, W)``), except with
    ``layout="channels_first"``, whose input has them last.

    layout:
        ``None``: the output has the input's shape, and its memory format where that is
        ``torch.channels_last`` (contiguous otherwise).
        ``"channels_first"``: input ``(N, H, W, C)``, as decoders and numpy arrays give
        images; output ``(N, C, H, W)``, contiguous.
        ``"channels_last"``: input ``(N, C, H, W)``; output ``(N, C, H, W)`` in the
        ``torch.channels_last`` memory format, i.e. its bytes are in NHWC order. That is
        what torch means by channels last: convolutions take the tensor as it is and run
        their channels-last kernels. ``out.permute(0, 2, 3, 1)`` is a contiguous
        ``(N, H, W, C)`` view of it, at no cost, for code that wants that shape.
        A 3-D input is handled as a batch of one and returned without the batch dim.

    The arithmetic is float32 whatever the input and output dtypes (integers above 2**24
    are rounded there), then the result is rounded once to ``dtype``: float32, float16 or
    bfloat16. ``mean`` and ``std`` have one value per channel; either may be left out
    (mean 0, std 1). Each call returns a new tensor on ``x``'s device, never a view of x.

    On a CUDA tensor of dtype uint8, float32, float16 or bfloat16, when ferry was built
    with its CUDA kernels (``ferry.backend_info()["built_with_cuda_kernels"]``), the whole
    transform is one kernel on the current stream, computing the same float32 steps as
    the torch ops. Other inputs, and tensors that require grad (the kernel has no
    backward), take the torch-op path, ``reference()``.

    Immutable after construction: one instance can serve several threads.
    """

    def __init__(
        self,
        *,
        dtype: torch.dtype = torch.float32,
        scale: float = 1.0,
        mean: Sequence[float] | torch.Tensor | None = None,
        std: Sequence[float] | torch.Tensor | None = None,
        layout: Layout | None = None,
    ) -> None:
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
        if dtype not in _OUTPUT_DTYPES:
            raise ValueError(
                f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}"
            )
        if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
            raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
        if layout not in _LAYOUTS:
            raise ValueError(
                f"layout must be None, 'channels_first' or 'channels_last', got {layout!r}"
            )
        self._mean = _channel_values("mean", mean)
        self._std = _channel_values("std", std)
        if self._std is not None and 0.0 in self._std:
            raise ValueError(f"std must not contain zero, got {list(self._std)}")
        if self._mean is not None and self._std is not None and len(self._mean) != len(self._std):
            raise ValueError(
                f"mean and std must have one value per channel each, got {len(self._mean)} "
                f"and {len(self._std)} values"
            )
        self._dtype = dtype
        self._scale = float(scale)
        self._layout = layout
        # mean/std as (1, C, 1, 1) tensors per device, so that the torch-op path does not
        # copy them to the device (and wait for the copy) on every call.
        self._tables: dict[torch.device, tuple[torch.Tensor | None, torch.Tensor | None]] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def mean(self) -> tuple[float, ...] | None:
        return self._mean

    @property
    def std(self) -> tuple[float, ...] | None:
        return self._std

    @property
    def layout(self) -> Layout | None:
        return self._layout

    def __repr__(self) -> str:
        return (
            f"ImageTransform(dtype={self._dtype}, scale={self._scale}, mean={self._mean}, "
            f"std={self._std}, layout={self._layout!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tables": {}}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The transformed ``x`` (see the class); one fused kernel where it applies."""
        v, one_image = self._as_batch(x)
        memory_format = self._output_format(v)
        if self._kernel_applies(v):
            if not (v.is_contiguous() or v.is_contiguous(memory_format=torch.channels_last)):
                v = v.contiguous()
            out = torch.empty(
                v.shape, dtype=self._dtype, device=v.device, memory_format=memory_format
            )
            channels = v.shape[1]
            mean, std = [], []
            if self._normalises():
                mean = list(self._mean or (0.0,) * channels)
                std = list(self._std or (1.0,) * channels)
            _ext.load().fused_image_transform(v, out, self._scale, mean, std)
        else:
            out = self._torch_ops(v, memory_format)
        return out[0] if one_image else out

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The same transform in torch ops, on any device (what the kernel is tested
        against)."""
        v, one_image = self._as_batch(x)
        out = self._torch_ops(v, self._output_format(v))
        return out[0] if one_image else out

    def _as_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """x validated, as a logical (N, C, H, W) view; and whether x was one image."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ImageTransform expects a torch.Tensor, got {type(x).__name__}")
        if not (x.dtype.is_floating_point or x.dtype in _INTEGER_DTYPES):
            raise TypeError(f"ImageTransform expects an integer or floating tensor, got {x.dtype}")
        if x.dim() not in (3, 4):
            raise ValueError(
                f"ImageTransform expects a 4-D batch or a 3-D image, got shape {tuple(x.shape)}"
            )
        one_image = x.dim() == 3
        v = x.unsqueeze(0) if one_image else x
        if self._layout == "channels_first":
            v = v.permute(0, 3, 1, 2)
        expected = len(self._mean or self._std or ())
        if expected and v.shape[1] != expected:
            dim = x.dim() - (1 if self._layout == "channels_first" else 3)
            raise ValueError(
                f"mean/std have {expected} values but the input has {v.shape[1]} channels "
                f"(dim {dim} of shape {tuple(x.shape)} with layout={self._layout!r})"
            )
        return v, one_image

    def _output_format(self, v: torch.Tensor) -> torch.memory_format:
        if self._layout == "channels_last" or (
            self._layout is None
            and not v.is_contiguous()
            and v.is_contiguous(memory_format=torch.channels_last)
        ):
            return torch.channels_last
        return torch.contiguous_format

    def _kernel_applies(self, v: torch.Tensor) -> bool:
        return (
            v.is_cuda
            and v.dtype in _KERNEL_INPUT_DTYPES
            and not v.requires_grad
            and v.numel() > 0
            and (not self._normalises() or v.shape[1] <= _kernel_max_channels())
            and _kernels_built()
        )

    def _normalises(self) -> bool:
        return self._mean is not None or self._std is not None

    def _torch_ops(self, v: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        # In place on a fresh float32 copy: one allocation, and never an alias of the input.
        y = v.to(torch.float32, copy=True)
        if self._scale != 1.0:
            y.mul_(self._scale)
        mean, std = self._device_tables(y.device)
        if mean is not None:
            y.sub_(mean)
        if std is not None:
            y.div_(std)
        return y.to(self._dtype, memory_format=memory_format)

    def _device_tables(
        self, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        tables = self._tables.get(device)
        if tables is None:
            tables = (_table(self._mean, device), _table(self._std, device))
            self._tables[device] = tables  # a race only builds the same tables twice
        return tables


def _table(values: tuple[float, ...] | None, device: torch.device) -> torch.Tensor | None:
    """values as a (1, C, 1, 1) float32 tensor, which broadcasts over a (N, C, H, W) batch."""
    if values is None:
        return None
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def _channel_values(
    name: str, values: Sequence[float] | torch.Tensor | None
) -> tuple[float, ...] | None:
    if values is None:
        return None
    if hasattr(values, "tolist"):  # a tensor or a numpy array
        values = values.tolist()
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}")
    if not values:
        raise ValueError(f"{name} must have one value per channel, got none")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be finite, got {list(values)}")
    return tuple(float(v) for v in values)


@functools.cache
def _kernels_built() -> bool:
    return bool(_ext.load().build_info()["cuda_kernels"])


@functools.cache
def _kernel_max_channels() -> int:
    return int(_ext.load().fused_image_transform_max_channels)
