"""ferry: a drop-in replacement for torch.utils.data.DataLoader with a C++ core.

    import ferry
    loader = ferry.DataLoader(dataset, batch_size=256, shuffle=True, device="cuda")
"""

from __future__ import annotations

from typing import Any

import torch

from . import _ext
from .dataloader import DataLoader
from .datasets import ArrayDataset
from .transforms import ImageTransform

__all__ = ["ArrayDataset", "DataLoader", "ImageTransform", "backend_info", "__version__"]
__version__ = "0.1.0"


def backend_info() -> dict[str, Any]:
    """What ferry's extension was built with and what runs now.

    Raises ImportError (saying how to rebuild) when the extension cannot be loaded.
    """
    built = _ext.load().build_info()
    cuda_available = torch.cuda.is_available()
    return {
        "ferry_version": __version__,
        "built_with_torch": built["torch_version"],
        "built_with_cuda_kernels": built["cuda_kernels"],
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "cuda_available": cuda_available,
        "cuda_device_count": torch.cuda.device_count() if cuda_available else 0,
        "native_threads_default": _native_default_threads(),
        # the image codecs built in (ferry.vision decodes other formats through PIL)
        "image_codecs": _ext.load().image_codecs(),
        # what ferry holds in this process now: page-locked staging slots (pin_memory,
        # device=) and mapped shared rings of worker processes; see memory_budget=
        "memory_in_use": _ext.load().memory_in_use(),
    }


def _native_default_threads() -> int:
    from ._native import default_threads

    return default_threads()
