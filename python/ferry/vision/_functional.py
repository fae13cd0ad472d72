"""The image operations behind ferry.vision.transforms, with torchvision v1's semantics:
on a PIL image they are Pillow's operations (what torchvision calls), on a tensor
(``[..., C, H, W]``) the torch operations torchvision uses. The size arithmetic (crop
offsets, resized sizes, padding) lives here once, shared by the transforms and by the
planner that emits the native pipeline's ops, so both give the same numbers and raise the
same errors."""

from __future__ import annotations

import numbers
import warnings
from enum import Enum
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps


class InterpolationMode(Enum):
    """torchvision's interpolation modes (same names and values)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_FROM_PIL_CODE = {
    0: InterpolationMode.NEAREST,
    2: InterpolationMode.BILINEAR,
    3: InterpolationMode.BICUBIC,
    4: InterpolationMode.BOX,
    5: InterpolationMode.HAMMING,
    1: InterpolationMode.LANCZOS,
}
PIL_CODES = {
    InterpolationMode.NEAREST: 0,
    InterpolationMode.NEAREST_EXACT: 0,
    InterpolationMode.BILINEAR: 2,
    InterpolationMode.BICUBIC: 3,
    InterpolationMode.BOX: 4,
    InterpolationMode.HAMMING: 5,
    InterpolationMode.LANCZOS: 1,
}


def interpolation_mode(value: Any) -> Any:
    """An InterpolationMode from a Pillow integer constant (as torchvision converts them)
    or from torchvision's own enum (same values); anything else is kept as given, and
    resize() refuses it as torchvision does."""
    if isinstance(value, InterpolationMode):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return _FROM_PIL_CODE[value]
    if isinstance(value, Enum) and isinstance(value.value, str):
        try:
            return InterpolationMode(value.value)
        except ValueError:
            pass
    return value


def is_pil(img: Any) -> bool:
    return isinstance(img, Image.Image)


def get_dimensions(img: Any) -> list[int]:
    """[channels, height, width] of a PIL image or a ``[..., C, H, W]`` tensor."""
    if isinstance(img, torch.Tensor):
        _check_tensor_image(img)
        channels = 1 if img.ndim == 2 else img.shape[-3]
        return [channels, img.shape[-2], img.shape[-1]]
    if is_pil(img):
        return [len(img.getbands()), img.height, img.width]
    raise TypeError(f"Unexpected type {type(img)}")


def _check_tensor_image(img: torch.Tensor) -> None:
    if img.ndim < 2:
        raise TypeError("Tensor is not a torch image.")


# -- sizes and offsets (shared with the planner) ---------------------------------------


def resized_output_size(
    height: int, width: int, size: Any, max_size: int | None = None
) -> list[int]:
    """[new_height, new_width] for resize(size, max_size) of a height x width image: an int
    (or a 1-sequence) sets the shorter side, the longer one truncated to keep the aspect."""
    if isinstance(size, (list, tuple)):
        if len(size) not in (1, 2):
            raise ValueError(
                "Size must be an int or a 1 or 2 element tuple/list, not a "
                f"{len(size)} element tuple/list"
            )
        if max_size is not None and len(size) != 1:
            raise ValueError(
                "max_size should only be passed if size specifies the length of the smaller "
                "edge, i.e. size should be an int or a sequence of length 1 in torchscript mode."
            )
    if isinstance(size, int):
        size = [size]
    if len(size) == 2:
        return [size[0], size[1]]
    short, long = (width, height) if width <= height else (height, width)
    requested = size[0]
    new_short, new_long = requested, int(requested * long / short)
    if max_size is not None:
        if max_size <= requested:
            raise ValueError(
                f"max_size = {max_size} must be strictly greater than the requested "
                f"size for the smaller edge size = {size}"
            )
        if new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return [new_h, new_w]


def center_crop_geometry(
    height: int, width: int, crop_height: int, crop_width: int
) -> tuple[list[int] | None, tuple[int, int] | None]:
    """(padding_ltrb or None, (top, left) or None) of center_crop: zero padding first where
    the crop is larger than the image, then the crop (none when the padded image is the
    crop)."""
    padding = None
    if crop_width > width or crop_height > height:
        padding = [
            (crop_width - width) // 2 if crop_width > width else 0,
            (crop_height - height) // 2 if crop_height > height else 0,
            (crop_width - width + 1) // 2 if crop_width > width else 0,
            (crop_height - height + 1) // 2 if crop_height > height else 0,
        ]
        width += padding[0] + padding[2]
        height += padding[1] + padding[3]
        if crop_width == width and crop_height == height:
            return padding, None
    top = int(round((height - crop_height) / 2.0))
    left = int(round((width - crop_width) / 2.0))
    return padding, (top, left)


def check_pad_args(padding: Any, fill: Any, padding_mode: Any, *, pil: bool) -> None:
    """The argument checks torchvision's pad runs on PIL images (pil=True) or tensors."""
    if not isinstance(padding, (numbers.Number, tuple, list)):
        raise TypeError("Got inappropriate padding arg")
    if pil:
        if fill is not None and not isinstance(fill, (numbers.Number, tuple, list)):
            raise TypeError("Got inappropriate fill arg")
    elif fill is not None and not isinstance(fill, (int, float)):
        raise TypeError("Got inappropriate fill arg")
    if not isinstance(padding_mode, str):
        raise TypeError("Got inappropriate padding_mode arg")
    if isinstance(padding, (tuple, list)) and len(padding) not in (1, 2, 4):
        raise ValueError(
            "Padding must be an int or a 1, 2, or 4 element tuple, not a "
            f"{len(padding)} element tuple"
        )
    if padding_mode not in ("constant", "edge", "reflect", "symmetric"):
        raise ValueError("Padding mode should be either constant, edge, reflect or symmetric")


def padding_ltrb(padding: Any) -> list[int]:
    """[left, top, right, bottom] of an int or a 1-, 2- (left/right, top/bottom) or
    4-sequence."""
    if isinstance(padding, (tuple, list)):
        if len(padding) == 1:
            return [padding[0]] * 4
        if len(padding) == 2:
            return [padding[0], padding[1], padding[0], padding[1]]
        return list(padding)
    return [padding] * 4


def pil_fill(fill: Any, bands: int, mode: str) -> Any:
    """The fill colour torchvision hands Pillow for an image with `bands` bands."""
    if fill is None:
        fill = 0
    if isinstance(fill, (int, float)) and bands > 1:
        fill = tuple([fill] * bands)
    if isinstance(fill, (list, tuple)):
        if len(fill) == 1:
            fill = tuple(fill) * bands
        elif len(fill) != bands:
            raise ValueError(
                "The number of elements in 'fill' does not match the number of channels of "
                f"the image ({len(fill)} != {bands})"
            )
        fill = tuple(fill)
    if mode != "F":
        fill = tuple(int(x) for x in fill) if isinstance(fill, tuple) else int(fill)
    return fill


# -- the operations ---------------------------------------------------------------------


def crop(img: Any, top: int, left: int, height: int, width: int) -> Any:
    """The height x width box at (top, left); the part outside the image is 0."""
    if is_pil(img):
        return img.crop((left, top, left + width, top + height))
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"img should be PIL Image or Tensor. Got {type(img)}")
    _check_tensor_image(img)
    h, w = img.shape[-2], img.shape[-1]
    right, bottom = left + width, top + height
    if left < 0 or top < 0 or right > w or bottom > h:
        outside = [
            max(-left + min(0, right), 0),
            max(-top + min(0, bottom), 0),
            max(right - max(w, left), 0),
            max(bottom - max(h, top), 0),
        ]
        return pad(img[..., max(top, 0) : bottom, max(left, 0) : right], outside, fill=0)
    return img[..., top:bottom, left:right]


def pad(img: Any, padding: Any, fill: Any = 0, padding_mode: str = "constant") -> Any:
    if is_pil(img):
        return _pad_pil(img, padding, fill, padding_mode)
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"img should be PIL Image or Tensor. Got {type(img)}")
    return _pad_tensor(img, padding, fill, padding_mode)


def _pad_pil(img: Image.Image, padding: Any, fill: Any, padding_mode: str) -> Image.Image:
    check_pad_args(padding, fill, padding_mode, pil=True)
    if isinstance(padding, list):
        padding = tuple(padding)
    if isinstance(padding, tuple) and len(padding) == 1:
        padding = padding[0]
    if padding_mode == "constant":
        colour = pil_fill(fill, len(img.getbands()), img.mode)
        if img.mode == "P":
            palette = img.getpalette()
            out = ImageOps.expand(img, border=padding, fill=colour)
            out.putpalette(palette)
            return out
        return ImageOps.expand(img, border=padding, fill=colour)
    left, top, right, bottom = padding_ltrb(padding)
    # negative padding crops, as torchvision does before np.pad
    if min(left, top, right, bottom) < 0:
        img = img.crop(
            (max(-left, 0), max(-top, 0), img.width - max(-right, 0), img.height - max(-bottom, 0))
        )
        left, top, right, bottom = (max(v, 0) for v in (left, top, right, bottom))
    palette = img.getpalette() if img.mode == "P" else None
    array = np.asarray(img)
    widths = [(top, bottom), (left, right)] + [(0, 0)] * (array.ndim - 2)
    out = Image.fromarray(np.pad(array, widths, mode=padding_mode))
    if palette is not None:
        out.putpalette(palette)
    return out


def _pad_tensor(img: torch.Tensor, padding: Any, fill: Any, padding_mode: str) -> torch.Tensor:
    _check_tensor_image(img)
    if fill is None:
        fill = 0
    if not isinstance(padding, (int, tuple, list)):
        raise TypeError("Got inappropriate padding arg")
    check_pad_args(padding, fill, padding_mode, pil=False)
    left, top, right, bottom = padding_ltrb(padding)
    if padding_mode == "symmetric":
        return _pad_symmetric(img, left, top, right, bottom)
    squeeze = img.ndim < 4
    if squeeze:
        img = img.unsqueeze(0)
    out_dtype = img.dtype
    # torch pads only floating tensors in the edge and reflect modes
    cast = padding_mode != "constant" and img.dtype not in (torch.float32, torch.float64)
    if cast:
        img = img.to(torch.float32)
    mode = "replicate" if padding_mode == "edge" else padding_mode
    widths = [left, right, top, bottom]
    if mode == "constant":
        img = torch.nn.functional.pad(img, widths, mode=mode, value=float(fill))
    else:
        img = torch.nn.functional.pad(img, widths, mode=mode)
    if squeeze:
        img = img.squeeze(0)
    return img.to(out_dtype) if cast else img


def _pad_symmetric(img: torch.Tensor, left: int, top: int, right: int, bottom: int) -> Any:
    if min(left, top, right, bottom) < 0:
        h, w = img.shape[-2], img.shape[-1]
        img = img[..., max(-top, 0) : h - max(-bottom, 0), max(-left, 0) : w - max(-right, 0)]
        left, top, right, bottom = (max(v, 0) for v in (left, top, right, bottom))

    def mirrored(n: int, before: int, after: int) -> torch.Tensor:
        idx = list(range(before - 1, -1, -1)) + list(range(n)) + [-(i + 1) for i in range(after)]
        return torch.tensor(idx, device=img.device)

    rows = mirrored(img.shape[-2], top, bottom)
    cols = mirrored(img.shape[-1], left, right)
    if img.ndim == 3:
        return img[:, rows[:, None], cols[None, :]]
    if img.ndim == 4:
        return img[:, :, rows[:, None], cols[None, :]]
    raise RuntimeError("Symmetric padding of N-D tensors are not supported yet")


def resize(
    img: Any,
    size: Any,
    interpolation: Any = InterpolationMode.BILINEAR,
    max_size: int | None = None,
    antialias: bool | None = True,
) -> Any:
    interpolation = interpolation_mode(interpolation)
    if not isinstance(interpolation, InterpolationMode):
        raise TypeError(
            "Argument interpolation should be a InterpolationMode or a corresponding Pillow "
            "integer constant"
        )
    _, height, width = get_dimensions(img)
    out_h, out_w = resized_output_size(height, width, size, max_size)
    if (height, width) == (out_h, out_w):
        return img
    if is_pil(img):
        if antialias is False:
            warn_antialias_ignored()
        return img.resize((out_w, out_h), PIL_CODES[interpolation])
    return _resize_tensor(img, [out_h, out_w], interpolation.value, antialias)


def warn_antialias_ignored() -> None:
    warnings.warn(
        "Anti-alias option is always applied for PIL Image input. Argument antialias is ignored.",
        stacklevel=3,
    )


def _resize_tensor(img: torch.Tensor, size: list[int], mode: str, antialias: Any) -> torch.Tensor:
    if antialias is None or mode not in ("bilinear", "bicubic"):
        antialias = False
    squeeze = img.ndim < 4
    if squeeze:
        img = img.unsqueeze(0)
    out_dtype = img.dtype
    cast = out_dtype not in (torch.float32, torch.float64)
    if cast:
        img = img.to(torch.float32)
    align_corners = False if mode in ("bilinear", "bicubic") else None
    img = torch.nn.functional.interpolate(
        img, size=size, mode=mode, align_corners=align_corners, antialias=antialias
    )
    if mode == "bicubic" and out_dtype == torch.uint8:
        img = img.clamp(min=0, max=255)
    if squeeze:
        img = img.squeeze(0)
    if cast:
        if not out_dtype.is_floating_point:
            img = torch.round(img)
        img = img.to(out_dtype)
    return img


def center_crop(img: Any, output_size: Any) -> Any:
    if isinstance(output_size, numbers.Number):
        output_size = (int(output_size), int(output_size))
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 1:
        output_size = (output_size[0], output_size[0])
    _, height, width = get_dimensions(img)
    crop_height, crop_width = output_size
    padding, corner = center_crop_geometry(height, width, crop_height, crop_width)
    if padding is not None:
        img = pad(img, padding, fill=0)
    if corner is None:
        return img
    return crop(img, corner[0], corner[1], crop_height, crop_width)


def hflip(img: Any) -> Any:
    if is_pil(img):
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    _require_tensor(img)
    return img.flip(-1)


def vflip(img: Any) -> Any:
    if is_pil(img):
        return img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    _require_tensor(img)
    return img.flip(-2)


def _require_tensor(img: Any) -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"img should be PIL Image or Tensor. Got {type(img)}")
    _check_tensor_image(img)


def rgb_to_grayscale(img: Any, num_output_channels: int = 1) -> Any:
    if is_pil(img):
        if num_output_channels not in (1, 3):
            raise ValueError("num_output_channels should be either 1 or 3")
        gray = img.convert("L")  # ITU-R 601-2 luma, in Pillow's integer arithmetic
        return gray if num_output_channels == 1 else gray.convert("RGB")
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"img should be PIL Image or Tensor. Got {type(img)}")
    if img.ndim < 3:
        raise TypeError(
            f"Input image tensor should have at least 3 dimensions, but found {img.ndim}"
        )
    channels = img.shape[-3]
    if channels not in (1, 3):
        raise TypeError(
            f"Input image tensor permitted channel values are [1, 3], but found {channels}"
        )
    if num_output_channels not in (1, 3):
        raise ValueError("num_output_channels should be either 1 or 3")
    if channels == 3:
        r, g, b = img.unbind(dim=-3)
        gray = (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(dim=-3)
    else:
        gray = img.clone()
    # torchvision expands to the input's shape: a 1-channel input stays 1-channel
    return gray.expand(img.shape) if num_output_channels == 3 else gray


# -- conversions to tensors and between dtypes ------------------------------------------


_PIL_MODE_DTYPES = {"I": np.int32, "I;16": np.int16, "F": np.float32}


def to_tensor(pic: Any) -> torch.Tensor:
    """ToTensor: C x H x W, uint8 data scaled to [0, 1] in the default float dtype."""
    if not (is_pil(pic) or isinstance(pic, np.ndarray)):
        raise TypeError(f"pic should be PIL Image or ndarray. Got {type(pic)}")
    if isinstance(pic, np.ndarray) and pic.ndim not in (2, 3):
        raise ValueError(f"pic should be 2/3 dimensional. Got {pic.ndim} dimensions.")
    float_dtype = torch.get_default_dtype()
    if isinstance(pic, np.ndarray):
        if pic.ndim == 2:
            pic = pic[:, :, None]
        img = torch.from_numpy(pic.transpose((2, 0, 1))).contiguous()
    else:
        array = np.array(pic, _PIL_MODE_DTYPES.get(pic.mode, np.uint8), copy=True)
        img = torch.from_numpy(array)
        if pic.mode == "1":
            img = 255 * img
        img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
        img = img.permute((2, 0, 1)).contiguous()
    if img.dtype == torch.uint8:
        return img.to(dtype=float_dtype).div(255)
    return img


def pil_to_tensor(pic: Any) -> torch.Tensor:
    """PILToTensor: C x H x W with the image's own dtype (a permuted view, as torchvision's)."""
    if not is_pil(pic):
        raise TypeError(f"pic should be PIL Image. Got {type(pic)}")
    img = torch.as_tensor(np.array(pic, copy=True))
    img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
    return img.permute((2, 0, 1))


def max_value(dtype: torch.dtype) -> int:
    """The value a dtype's images saturate at (1 for floating dtypes)."""
    return {
        torch.uint8: 255,
        torch.int8: 127,
        torch.int16: 32767,
        torch.uint16: 65535,
        torch.int32: 2147483647,
        torch.int64: 9223372036854775807,
    }.get(dtype, 1)


def _unsafe_float_cast(src: torch.dtype, dst: torch.dtype) -> bool:
    return (src == torch.float32 and dst in (torch.int32, torch.int64)) or (
        src == torch.float64 and dst == torch.int64
    )


def convert_image_dtype(image: Any, dtype: torch.dtype = torch.float) -> torch.Tensor:
    """ConvertImageDtype (v1): the value range rescaled to the new dtype's."""
    if not isinstance(image, torch.Tensor):
        raise TypeError("Input img should be Tensor Image")
    if image.dtype == dtype:
        return image
    if image.is_floating_point():
        if dtype.is_floating_point:
            return image.to(dtype)
        if _unsafe_float_cast(image.dtype, dtype):
            raise RuntimeError(
                f"The cast from {image.dtype} to {dtype} cannot be performed safely."
            )
        # max + 1 - eps spreads [0, 1] evenly over the integers; see torchvision#2078
        return image.mul(float(max_value(dtype)) + 1.0 - 1e-3).to(dtype)
    input_max = float(max_value(image.dtype))
    if dtype.is_floating_point:
        return image.to(dtype) / input_max
    output_max = float(max_value(dtype))
    if input_max > output_max:
        factor = int((input_max + 1) // (output_max + 1))
        return torch.div(image, factor, rounding_mode="floor").to(dtype)
    factor = int((output_max + 1) // (input_max + 1))
    return image.to(dtype) * factor


def _value_bits(dtype: torch.dtype) -> int:
    bits = {torch.uint8: 8, torch.int8: 7, torch.int16: 15, torch.uint16: 16, torch.int32: 31}
    if dtype not in bits and dtype != torch.int64:
        raise TypeError(
            f"Number of value bits is only defined for integer dtypes, but got {dtype}."
        )
    return bits.get(dtype, 63)


def to_dtype(image: torch.Tensor, dtype: torch.dtype, scale: bool) -> torch.Tensor:
    """ToDtype (torchvision's v2) on a tensor image: a cast, or with scale=True the value
    range rescaled (int to float by a multiplication with 1/max, int to int by bit shifts)."""
    if image.dtype == dtype:
        return image
    if not scale:
        return image.to(dtype)
    if image.is_floating_point():
        if dtype.is_floating_point:
            return image.to(dtype)
        if _unsafe_float_cast(image.dtype, dtype):
            raise RuntimeError(
                f"The conversion from {image.dtype} to {dtype} cannot be performed safely."
            )
        return image.mul(float(max_value(dtype)) + 1.0 - 1e-3).to(dtype)
    if dtype.is_floating_point:
        return image.to(dtype).mul_(1.0 / max_value(image.dtype))
    bits_in, bits_out = _value_bits(image.dtype), _value_bits(dtype)
    shift = abs(bits_in - bits_out)
    if bits_in > bits_out:
        if image.dtype == torch.uint16:
            return (image / 2**shift).to(dtype)
        return image.bitwise_right_shift(shift).to(dtype)
    if dtype == torch.uint16:
        return image.to(dtype) * 2**shift
    return image.to(dtype).bitwise_left_shift_(shift)


def normalize_tables(
    mean: Any, std: Any, dtype: torch.dtype, device: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as Normalize uses them: tensors of `dtype`, std checked for zeros."""
    mean_t = torch.as_tensor(mean, dtype=dtype, device=device)
    std_t = torch.as_tensor(std, dtype=dtype, device=device)
    if (std_t == 0).any():
        raise ValueError(
            f"std evaluated to zero after conversion to {dtype}, leading to division by zero."
        )
    return mean_t, std_t


def normalize(tensor: Any, mean: Any, std: Any, inplace: bool = False) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"img should be Tensor Image. Got {type(tensor)}")
    _check_tensor_image(tensor)
    if not tensor.is_floating_point():
        raise TypeError(f"Input tensor should be a float tensor. Got {tensor.dtype}.")
    if tensor.ndim < 3:
        raise ValueError(
            "Expected tensor to be a tensor image of size (..., C, H, W). Got tensor.size() = "
            f"{tensor.size()}"
        )
    if not inplace:
        tensor = tensor.clone()
    mean_t, std_t = normalize_tables(mean, std, tensor.dtype, tensor.device)
    if mean_t.ndim == 1:
        mean_t = mean_t.view(-1, 1, 1)
    if std_t.ndim == 1:
        std_t = std_t.view(-1, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)
