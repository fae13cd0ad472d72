"""torchvision's (v1) transforms, with its names, arguments, defaults and semantics:

    from ferry.vision import transforms as T
    T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
               T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

Called on a PIL image (or, where torchvision allows it, a tensor), each one does what
torchvision's does, drawing its random parameters from torch's global RNG with the same
calls in the same order. Each also knows how to describe itself as ops of ferry's native
pixel pipeline for an image of a given size (see ferry.vision.plan_sample), drawing the
same numbers: so a seeded run crops, flips and resizes where torchvision would, whichever
path a sample takes. Any other callable may be composed with them; a sample whose
transform ferry cannot describe takes the Python path.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from . import _functional as F
from ._functional import InterpolationMode

if TYPE_CHECKING:
    from ._plan import PlanState

__all__ = [
    "CenterCrop",
    "Compose",
    "ConvertImageDtype",
    "Grayscale",
    "InterpolationMode",
    "Normalize",
    "PILToTensor",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomVerticalFlip",
    "Resize",
    "ToDtype",
    "ToTensor",
]

# Resampling the native pipeline does as Pillow does; the others take the Python path.
_NATIVE_INTERPOLATIONS = (
    InterpolationMode.NEAREST,
    InterpolationMode.NEAREST_EXACT,
    InterpolationMode.BILINEAR,
    InterpolationMode.BICUBIC,
)


class Compose:
    """Applies `transforms` in order: ``img = t(img)`` for each."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = transforms

    def __call__(self, img: Any) -> Any:
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        lines = "".join(f"\n    {t}" for t in self.transforms)
        return f"{type(self).__name__}({lines}\n)"


def _setup_size(size: Any, error_msg: str) -> tuple[int, int]:
    if isinstance(size, numbers.Number):
        return int(size), int(size)
    if isinstance(size, Sequence) and len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ValueError(error_msg)
    return size[0], size[1]


class Resize(torch.nn.Module):
    """Resizes to `size` (h, w), or, for an int, the shorter side to `size` with the longer
    one truncated to keep the aspect (then capped at `max_size`). PIL images are resized by
    Pillow, antialiased; tensors by torch's interpolate (antialiased where `antialias`)."""

    def __init__(
        self,
        size: int | Sequence[int],
        interpolation: InterpolationMode | int = InterpolationMode.BILINEAR,
        max_size: int | None = None,
        antialias: bool | None = True,
    ) -> None:
        super().__init__()
        if not isinstance(size, (int, Sequence)):
            raise TypeError(f"Size should be int or sequence. Got {type(size)}")
        if isinstance(size, Sequence) and len(size) not in (1, 2):
            raise ValueError("If size is a sequence, it should have 1 or 2 values")
        self.size = size
        self.max_size = max_size
        self.interpolation = F.interpolation_mode(interpolation)
        self.antialias = antialias

    def forward(self, img: Any) -> Any:
        return F.resize(img, self.size, self.interpolation, self.max_size, self.antialias)

    def _plan_check(self, state: PlanState) -> bool:
        sizes = [self.size] if isinstance(self.size, int) else list(self.size)
        if self.max_size is not None:
            sizes.append(self.max_size)
        return (
            state.stage == "image"
            and self.interpolation in _NATIVE_INTERPOLATIONS
            and _all_ints(sizes)
        )

    def _plan_emit(self, state: PlanState) -> None:
        out_h, out_w = F.resized_output_size(state.height, state.width, self.size, self.max_size)
        state.resize(out_h, out_w, self.interpolation, self.antialias)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, interpolation={self.interpolation.value}, "
            f"max_size={self.max_size}, antialias={self.antialias}"
        )


class CenterCrop(torch.nn.Module):
    """Crops the centre (offsets rounded); where the crop is larger than the image, the
    image is zero-padded first (the odd pixel on the right and bottom)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        super().__init__()
        self.size = _setup_size(size, "Please provide only two dimensions (h, w) for size.")

    def forward(self, img: Any) -> Any:
        return F.center_crop(img, self.size)

    def _plan_check(self, state: PlanState) -> bool:
        return state.stage == "image" and _all_ints(self.size)

    def _plan_emit(self, state: PlanState) -> None:
        crop_h, crop_w = self.size
        padding, corner = F.center_crop_geometry(state.height, state.width, crop_h, crop_w)
        if padding is not None:
            state.pad(padding, 0)
        if corner is not None:
            state.crop(corner[0], corner[1], crop_h, crop_w)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class RandomCrop(torch.nn.Module):
    """Crops a random (h, w) box, after optional `padding` (and, with `pad_if_needed`,
    padding both sides of a dimension smaller than the crop by the missing amount, as
    torchvision does)."""

    def __init__(
        self,
        size: int | Sequence[int],
        padding: int | Sequence[int] | None = None,
        pad_if_needed: bool = False,
        fill: Any = 0,
        padding_mode: str = "constant",
    ) -> None:
        super().__init__()
        self.size = tuple(_setup_size(size, "Please provide only two dimensions (h, w) for size."))
        self.padding = padding
        self.pad_if_needed = pad_if_needed
        self.fill = fill
        self.padding_mode = padding_mode

    @staticmethod
    def get_params(img: Any, output_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, left, height, width) of a random crop of `output_size`."""
        _, h, w = F.get_dimensions(img)
        return _draw_crop(h, w, output_size)

    def forward(self, img: Any) -> Any:
        if self.padding is not None:
            img = F.pad(img, self.padding, self.fill, self.padding_mode)
        _, height, width = F.get_dimensions(img)
        if self.pad_if_needed and width < self.size[1]:
            img = F.pad(img, [self.size[1] - width, 0], self.fill, self.padding_mode)
        if self.pad_if_needed and height < self.size[0]:
            img = F.pad(img, [0, self.size[0] - height], self.fill, self.padding_mode)
        i, j, h, w = self.get_params(img, self.size)
        return F.crop(img, i, j, h, w)

    def _plan_check(self, state: PlanState) -> bool:
        if state.stage != "image" or self.padding_mode != "constant":
            return False
        if not _all_ints(self.size):
            return False
        if self.padding is not None and not _plain_padding(self.padding):
            return False
        return state.fill_value(self.fill) is not None

    def _plan_emit(self, state: PlanState) -> None:
        fill = state.fill_value(self.fill)
        if self.padding is not None:
            state.pad(F.padding_ltrb(self.padding), fill)
        height, width = state.height, state.width
        if self.pad_if_needed and width < self.size[1]:
            state.pad(F.padding_ltrb([self.size[1] - width, 0]), fill)
        if self.pad_if_needed and height < self.size[0]:
            state.pad(F.padding_ltrb([0, self.size[0] - height]), fill)
        i, j, h, w = _draw_crop(state.height, state.width, self.size)
        state.crop(i, j, h, w)

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}"


def _all_ints(values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _plain_padding(padding: Any) -> bool:
    """Non-negative int padding in one of the shapes pad accepts (negative padding crops:
    that, and anything pad would refuse, is left to the Python path)."""
    values = padding if isinstance(padding, (list, tuple)) else [padding]
    return len(values) in (1, 2, 4) and _all_ints(values) and min(values) >= 0


def _draw_crop(height: int, width: int, output_size: Sequence[int]) -> tuple[int, int, int, int]:
    th, tw = output_size
    if height < th or width < tw:
        raise ValueError(
            f"Required crop size {(th, tw)} is larger than input image size {(height, width)}"
        )
    if width == tw and height == th:
        return 0, 0, height, width
    i = torch.randint(0, height - th + 1, size=(1,)).item()
    j = torch.randint(0, width - tw + 1, size=(1,)).item()
    return i, j, th, tw


class RandomResizedCrop(torch.nn.Module):
    """Crops a random box (area a uniform fraction of `scale`, log-uniform aspect within
    `ratio`, up to 10 draws, else a centre crop clamped to `ratio`) and resizes it to
    `size`."""

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: InterpolationMode | int = InterpolationMode.BILINEAR,
        antialias: bool | None = True,
    ) -> None:
        super().__init__()
        self.size = _setup_size(size, "Please provide only two dimensions (h, w) for size.")
        if not isinstance(scale, Sequence):
            raise TypeError("Scale should be a sequence")
        if not isinstance(ratio, Sequence):
            raise TypeError("Ratio should be a sequence")
        if (scale[0] > scale[1]) or (ratio[0] > ratio[1]):
            warnings.warn("Scale and ratio should be of kind (min, max)", stacklevel=2)
        self.interpolation = F.interpolation_mode(interpolation)
        self.antialias = antialias
        self.scale = scale
        self.ratio = ratio

    @staticmethod
    def get_params(
        img: Any, scale: Sequence[float], ratio: Sequence[float]
    ) -> tuple[int, int, int, int]:
        """(top, left, height, width) of a random crop of `img`."""
        _, height, width = F.get_dimensions(img)
        return _draw_resized_crop(height, width, scale, ratio)

    def forward(self, img: Any) -> Any:
        i, j, h, w = self.get_params(img, self.scale, self.ratio)
        img = F.crop(img, i, j, h, w)
        return F.resize(img, list(self.size), self.interpolation, antialias=self.antialias)

    def _plan_check(self, state: PlanState) -> bool:
        return (
            state.stage == "image"
            and self.interpolation in _NATIVE_INTERPOLATIONS
            and _all_ints(self.size)
        )

    def _plan_emit(self, state: PlanState) -> None:
        i, j, h, w = _draw_resized_crop(state.height, state.width, self.scale, self.ratio)
        state.crop(i, j, h, w)
        state.resize(self.size[0], self.size[1], self.interpolation, self.antialias)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, scale={tuple(round(s, 4) for s in self.scale)}, "
            f"ratio={tuple(round(r, 4) for r in self.ratio)}, "
            f"interpolation={self.interpolation.value}, antialias={self.antialias}"
        )


def _draw_resized_crop(
    height: int, width: int, scale: Sequence[float], ratio: Sequence[float]
) -> tuple[int, int, int, int]:
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))  # float32, as torchvision computes it
    log_lo, log_hi = float(log_ratio[0]), float(log_ratio[1])
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_lo, log_hi)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    # ten misses: the whole image, cut to the nearest allowed aspect, centred
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomHorizontalFlip(torch.nn.Module):
    """Mirrors left-right with probability p (drawn as ``torch.rand(1) < p``)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, img: Any) -> Any:
        if torch.rand(1) < self.p:
            return F.hflip(img)
        return img

    def _plan_check(self, state: PlanState) -> bool:
        return state.stage == "image"

    def _plan_emit(self, state: PlanState) -> None:
        if torch.rand(1) < self.p:
            state.ops.append(("hflip",))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RandomVerticalFlip(torch.nn.Module):
    """Mirrors top-bottom with probability p (drawn as ``torch.rand(1) < p``)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, img: Any) -> Any:
        if torch.rand(1) < self.p:
            return F.vflip(img)
        return img

    def _plan_check(self, state: PlanState) -> bool:
        return state.stage == "image"

    def _plan_emit(self, state: PlanState) -> None:
        if torch.rand(1) < self.p:
            state.ops.append(("vflip",))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Grayscale(torch.nn.Module):
    """Converts to grayscale (Pillow's ITU-R 601-2 luma on PIL images), 1 or 3 channels."""

    def __init__(self, num_output_channels: int = 1) -> None:
        super().__init__()
        self.num_output_channels = num_output_channels

    def forward(self, img: Any) -> Any:
        return F.rgb_to_grayscale(img, num_output_channels=self.num_output_channels)

    def _plan_check(self, state: PlanState) -> bool:
        if state.stage != "image" or self.num_output_channels not in (1, 3):
            return False
        state.channels = self.num_output_channels
        return True

    def _plan_emit(self, state: PlanState) -> None:
        state.ops.append(("gray", self.num_output_channels))
        state.channels = self.num_output_channels

    def extra_repr(self) -> str:
        return f"num_output_channels={self.num_output_channels}"


class ToTensor:
    """A PIL image or an H x W x C ndarray to a C x H x W tensor; uint8 data become the
    default float dtype scaled to [0, 1]."""

    def __call__(self, pic: Any) -> torch.Tensor:
        return F.to_tensor(pic)

    def _plan_check(self, state: PlanState) -> bool:
        # the native stage makes float32: other default dtypes take the Python path
        if state.stage != "image" or torch.get_default_dtype() != torch.float32:
            return False
        state.stage = "float"
        return True

    def _plan_emit(self, state: PlanState) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PILToTensor:
    """A PIL image to a C x H x W tensor of its own dtype, values unchanged."""

    def __call__(self, pic: Any) -> torch.Tensor:
        return F.pil_to_tensor(pic)

    def _plan_check(self, state: PlanState) -> bool:
        if state.stage != "image":
            return False
        state.stage = "uint8"
        return True

    def _plan_emit(self, state: PlanState) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ConvertImageDtype(torch.nn.Module):
    """A tensor image to `dtype`, its value range rescaled (torchvision v1's rules)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, image: Any) -> torch.Tensor:
        return F.convert_image_dtype(image, self.dtype)

    def _plan_check(self, state: PlanState) -> bool:
        if state.stage == "uint8" and self.dtype == torch.float32:
            state.stage = "float"  # x / 255, what the native "to_tensor" computes
            return True
        # the same dtype is a no-op; anything else (a PIL image too) takes the Python path
        return self.dtype == {"uint8": torch.uint8, "float": torch.float32}.get(state.stage)

    def _plan_emit(self, state: PlanState) -> None:
        pass


class ToDtype(torch.nn.Module):
    """A tensor image to `dtype` (torchvision v2's ToDtype on a plain tensor): a cast, or
    with ``scale=True`` its value range rescaled. PIL images pass through unchanged."""

    def __init__(self, dtype: torch.dtype, scale: bool = False) -> None:
        super().__init__()
        if not isinstance(dtype, torch.dtype):
            raise TypeError(
                f"dtype must be a torch.dtype (ferry's ToDtype takes no dict), got {dtype!r}"
            )
        self.dtype = dtype
        self.scale = scale

    def forward(self, inpt: Any) -> Any:
        if not isinstance(inpt, torch.Tensor):
            return inpt
        return F.to_dtype(inpt, self.dtype, self.scale)

    def _plan_check(self, state: PlanState) -> bool:
        # uint8 -> float32 here multiplies by float32(1/255), which is not the native
        # stage's x / 255 in the last bit: only the no-op cases are described natively
        if state.stage == "image":
            return True
        dtype = torch.uint8 if state.stage == "uint8" else torch.float32
        return self.dtype == dtype

    def _plan_emit(self, state: PlanState) -> None:
        pass

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, scale={self.scale}"


class Normalize(torch.nn.Module):
    """``(x - mean[c]) / std[c]`` per channel of a float tensor image, in its dtype."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        super().__init__()
        self.mean = mean
        self.std = std
        self.inplace = inplace

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return F.normalize(tensor, self.mean, self.std, self.inplace)

    def _plan_check(self, state: PlanState) -> bool:
        if state.stage != "float" or state.mean:
            return False
        try:
            mean, std = (torch.as_tensor(v, dtype=torch.float32) for v in (self.mean, self.std))
        except (TypeError, ValueError, RuntimeError):
            return False
        channels = state.channels
        for values in (mean, std):
            if values.ndim > 1 or values.numel() not in (1, channels):
                return False  # torch's broadcasting error comes from the Python path
        if (std == 0).any():
            return False  # so does the zero-std error, sample by sample
        state.mean = tuple(mean.expand(channels).tolist())
        state.std = tuple(std.expand(channels).tolist())
        return True

    def _plan_emit(self, state: PlanState) -> None:
        pass  # no draws; the tables are in the tensor stage (_plan_check)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


# The classes the planner knows, by exact type: a subclass may change forward().
PLANNABLE = frozenset(
    {
        CenterCrop,
        ConvertImageDtype,
        Grayscale,
        Normalize,
        PILToTensor,
        RandomCrop,
        RandomHorizontalFlip,
        RandomResizedCrop,
        RandomVerticalFlip,
        Resize,
        ToDtype,
        ToTensor,
    }
)
