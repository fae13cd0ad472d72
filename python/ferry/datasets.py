"""Array-backed datasets that the native gather reads without any Python per sample."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ArrayDataset"]


def torch_dtype_of(dtype: np.dtype) -> torch.dtype:
    """The torch dtype a numpy dtype maps to; TypeError when it has none."""
    try:
        return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    except (TypeError, ValueError) as exc:
        raise TypeError(f"numpy dtype {dtype} has no torch equivalent: {exc}") from exc


class ArrayDataset(Dataset[tuple[Tensor, ...]]):
    """Like :class:`torch.utils.data.TensorDataset`, over numpy arrays, ``np.memmap``
    files or tensors, all indexed along their first dimension.

    Arrays are kept as given: a memmap is never read into memory as a whole, only the
    rows a batch needs. ``dataset[i]`` is a tuple of tensors, as ``TensorDataset`` gives
    (rows of numpy arrays are copied into new tensors; rows of tensors are views).
    Under :class:`ferry.DataLoader` batches are gathered in C++ threads straight from the
    arrays' memory.

    Raises ValueError when the arrays differ in length, TypeError for an array whose
    dtype torch cannot represent (strings, objects, non-native byte order).
    """

    arrays: tuple[np.ndarray | Tensor, ...]

    def __init__(self, *arrays: Any) -> None:
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        kept: list[np.ndarray | Tensor] = []
        for i, a in enumerate(arrays):
            if not isinstance(a, (np.ndarray, Tensor)):
                a = np.asarray(a)
            if a.ndim == 0:
                raise ValueError(f"ArrayDataset: array {i} is 0-dimensional; rows need a dimension")
            if isinstance(a, np.ndarray):
                torch_dtype_of(a.dtype)  # raises for dtypes torch cannot hold
            kept.append(a)
        lengths = [len(a) for a in kept]
        if any(n != lengths[0] for n in lengths):
            raise ValueError(f"Size mismatch between arrays: lengths {lengths}")
        self.arrays = tuple(kept)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(
            a[index] if isinstance(a, Tensor) else torch.from_numpy(np.array(a[index]))
            for a in self.arrays
        )

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __repr__(self) -> str:
        parts = ", ".join(f"{type(a).__name__}{tuple(a.shape)}:{a.dtype}" for a in self.arrays)
        return f"ArrayDataset({parts})"
