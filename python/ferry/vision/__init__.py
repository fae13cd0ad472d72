"""ferry.vision: image datasets and transforms with torchvision's names, contracts and
semantics, whose samples ferry decodes and transforms in C++ where it can.

    from ferry import DataLoader
    from ferry.vision import ImageFolder, transforms as T
    train = ImageFolder("data/train", transform=T.Compose([
        T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]))
"""

from __future__ import annotations

from . import transforms
from ._functional import InterpolationMode
from ._plan import plan_sample
from .datasets import (
    IMG_EXTENSIONS,
    DatasetFolder,
    ImageFolder,
    ImageList,
    default_loader,
    pil_loader,
)

__all__ = [
    "IMG_EXTENSIONS",
    "DatasetFolder",
    "ImageFolder",
    "ImageList",
    "InterpolationMode",
    "default_loader",
    "pil_loader",
    "plan_sample",
    "transforms",
]
