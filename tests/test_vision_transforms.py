"""ferry.vision.transforms against references written here from torchvision's documented
(v1) semantics on top of Pillow and numpy: the same pixels (exactly: the Python path is
Pillow's arithmetic) and the same torch RNG calls (the RNG state after a seeded call is
the state the reference's draws leave)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ferry.vision import InterpolationMode
from ferry.vision import transforms as T
from vision_reference import photos, scaled


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Photographs of several sizes and aspects, RGB and grayscale, some tiny."""
    pics = photos()
    out = [
        scaled(pics["astronaut"], 500),
        scaled(pics["chelsea"], 451),
        scaled(pics["rocket"], 320),
    ]
    out.append(scaled(pics["coffee"], 37))
    out.append(scaled(pics["camera"], 130))  # mode L
    out.append(out[1].rotate(90, expand=True))  # portrait
    return out


def seeded(seed, fn, *args):
    """fn(*args) from a seeded global RNG, and the RNG state it leaves."""
    torch.manual_seed(seed)
    out = fn(*args)
    return out, torch.get_rng_state()


def assert_same_image(expected: Image.Image, got: Image.Image) -> None:
    assert isinstance(got, Image.Image)
    assert got.mode == expected.mode and got.size == expected.size
    assert np.array_equal(np.asarray(got), np.asarray(expected))


def assert_same_draws(seed, reference, transform, img):
    expected, expected_state = seeded(seed, reference, img)
    got, got_state = seeded(seed, transform, img)
    assert torch.equal(got_state, expected_state), "different torch RNG calls"
    return expected, got


# -- references (torchvision's documented behaviour, written on Pillow and numpy) --------


def ref_resized_crop_box(height, width, scale, ratio):
    """RandomResizedCrop.get_params as documented: up to 10 (area, log-aspect) uniform
    draws, then two randints; else the whole image clamped to the ratio range, centred."""
    area = height * width
    log_r = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_r[0], log_r[1])).item()
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,)).item()
            left = torch.randint(0, width - w + 1, size=(1,)).item()
            return top, left, h, w
    if width / height < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif width / height > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def ref_random_resized_crop(size, scale, ratio, interp):
    def run(img):
        top, left, h, w = ref_resized_crop_box(img.height, img.width, scale, ratio)
        crop = img.crop((left, top, left + w, top + h))
        return crop if (h, w) == size else crop.resize((size[1], size[0]), interp)

    return run


def ref_resize_size(height, width, size, max_size=None):
    """Resize's documented output size: an int sets the shorter side, the longer one is
    size * long / short truncated, then both scaled down if the longer exceeds max_size."""
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return tuple(size)
    size = size if isinstance(size, int) else size[0]
    if width <= height:
        w, h = size, int(size * height / width)
        if max_size is not None and h > max_size:
            w, h = int(max_size * w / h), max_size
    else:
        h, w = size, int(size * width / height)
        if max_size is not None and w > max_size:
            h, w = int(max_size * h / w), max_size
    return h, w


def zero_padded(array, left, top, right, bottom, fill=0):
    widths = [(top, bottom), (left, right)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, constant_values=fill)


def ref_center_crop(img, ch, cw):
    a = np.asarray(img)
    h, w = a.shape[:2]
    if cw > w or ch > h:
        dw, dh = max(cw - w, 0), max(ch - h, 0)
        a = zero_padded(a, dw // 2, dh // 2, (dw + 1) // 2, (dh + 1) // 2)
        h, w = a.shape[:2]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return a[top : top + ch, left : left + cw]


# -- RandomResizedCrop ----------------------------------------------------------------


@pytest.mark.parametrize(
    "size, scale, ratio",
    [
        ((224, 224), (0.08, 1.0), (3 / 4, 4 / 3)),
        ((100, 160), (0.3, 0.9), (0.5, 2.0)),
        ((64, 64), (0.99, 1.0), (2.5, 3.0)),  # ten misses: the centre-crop fallback
        ((64, 64), (0.99, 1.0), (0.2, 0.3)),
        ((50, 70), (1.0, 1.0), (1.0, 1.0)),
    ],
)
def test_random_resized_crop_matches_reference(images, size, scale, ratio):
    transform = T.RandomResizedCrop(size, scale=scale, ratio=ratio)
    reference = ref_random_resized_crop(size, scale, ratio, Image.BILINEAR)
    for k, img in enumerate(images):
        for seed in range(4):
            expected, got = assert_same_draws(100 * k + seed, reference, transform, img)
            assert_same_image(expected, got)


@pytest.mark.parametrize(
    "interpolation, code",
    [
        (InterpolationMode.NEAREST, Image.NEAREST),
        (InterpolationMode.BICUBIC, Image.BICUBIC),
        (InterpolationMode.LANCZOS, Image.LANCZOS),
        (3, Image.BICUBIC),  # Pillow's constants are accepted, as by torchvision
    ],
)
def test_random_resized_crop_interpolations(images, interpolation, code):
    transform = T.RandomResizedCrop(96, interpolation=interpolation)
    reference = ref_random_resized_crop((96, 96), (0.08, 1.0), (3 / 4, 4 / 3), code)
    for seed, img in enumerate(images[:3]):
        assert_same_image(*assert_same_draws(seed, reference, transform, img))


def test_random_resized_crop_get_params_is_torchvisions(images):
    for seed, img in enumerate(images):
        expected, _ = seeded(
            seed, ref_resized_crop_box, img.height, img.width, (0.08, 1), (3 / 4, 4 / 3)
        )
        got, _ = seeded(seed, T.RandomResizedCrop.get_params, img, (0.08, 1), (3 / 4, 4 / 3))
        assert got == expected


def test_random_resized_crop_arguments():
    assert T.RandomResizedCrop(32).size == (32, 32)
    assert T.RandomResizedCrop([32]).size == (32, 32)
    with pytest.raises(ValueError, match="two dimensions"):
        T.RandomResizedCrop((1, 2, 3))
    with pytest.raises(TypeError, match="Scale should be a sequence"):
        T.RandomResizedCrop(32, scale=0.5)
    with pytest.raises(TypeError, match="Ratio should be a sequence"):
        T.RandomResizedCrop(32, ratio=1.0)
    with pytest.warns(UserWarning, match=r"\(min, max\)"):
        T.RandomResizedCrop(32, scale=(1.0, 0.5))
    assert T.RandomResizedCrop(32, interpolation=0).interpolation is InterpolationMode.NEAREST


# -- Resize, CenterCrop, RandomCrop ------------------------------------------------------


@pytest.mark.parametrize(
    "size, max_size, interpolation",
    [
        (256, None, InterpolationMode.BILINEAR),
        ([100], None, InterpolationMode.BICUBIC),
        ((120, 90), None, InterpolationMode.NEAREST),
        (64, 80, InterpolationMode.BILINEAR),
        (600, None, InterpolationMode.BILINEAR),  # upscaling
        (333, None, InterpolationMode.HAMMING),
    ],
)
def test_resize_matches_reference(images, size, max_size, interpolation):
    codes = {"nearest": 0, "bilinear": 2, "bicubic": 3, "hamming": 5}
    transform = T.Resize(size, interpolation=interpolation, max_size=max_size)
    for img in images:
        h, w = ref_resize_size(img.height, img.width, size, max_size)
        got = transform(img)
        if (h, w) == (img.height, img.width):
            assert got is img  # torchvision hands the image back unchanged
        else:
            assert_same_image(img.resize((w, h), codes[interpolation.value]), got)


def test_resize_errors_and_warnings(images):
    with pytest.raises(TypeError, match="Size should be int or sequence"):
        T.Resize(2.5)
    with pytest.raises(ValueError, match="1 or 2 values"):
        T.Resize((1, 2, 3))
    with pytest.raises(ValueError, match="max_size should only be passed"):
        T.Resize((10, 20), max_size=30)(images[0])
    with pytest.raises(ValueError, match="must be strictly greater"):
        T.Resize(64, max_size=64)(images[0])
    with pytest.raises(TypeError, match="InterpolationMode"):
        T.Resize(64, interpolation="bilinear")(images[0])
    with pytest.warns(UserWarning, match="Anti-alias option is always applied"):
        T.Resize(64, antialias=False)(images[0])


@pytest.mark.parametrize("size", [224, (100, 151), (600, 20), (501, 701), 1, (37, 37)])
def test_center_crop_matches_reference(images, size):
    ch, cw = (size, size) if isinstance(size, int) else size
    for img in images:
        got = T.CenterCrop(size)(img)
        assert got.size == (cw, ch)
        assert np.array_equal(np.asarray(got), ref_center_crop(img, ch, cw))


@pytest.mark.parametrize(
    "size, padding, pad_if_needed, fill",
    [
        (96, None, False, 0),
        ((64, 120), 4, False, 0),
        (80, (2, 7), False, 128),
        (90, [1, 2, 3, 4], False, (9, 9, 9)),
        (700, None, True, 17),
        ((30, 600), 3, True, 0),
    ],
)
def test_random_crop_matches_reference(images, size, padding, pad_if_needed, fill):
    th, tw = (size, size) if isinstance(size, int) else size

    def reference(img):
        a = np.asarray(img)
        value = fill[0] if isinstance(fill, tuple) else fill
        if padding is not None:
            p = [padding] * 4 if isinstance(padding, int) else list(padding)
            p = p * 2 if len(p) == 2 else p
            a = zero_padded(a, p[0], p[1], p[2], p[3], value)
        h, w = a.shape[:2]
        if pad_if_needed and w < tw:  # torchvision pads both sides by the whole shortfall
            a = zero_padded(a, tw - w, 0, tw - w, 0, value)
        if pad_if_needed and h < th:
            a = zero_padded(a, 0, th - h, 0, th - h, value)
        h, w = a.shape[:2]
        if h < th or w < tw:
            raise ValueError(f"crop {(th, tw)} is larger than input image size {(h, w)}")
        if (h, w) == (th, tw):
            return a
        top = torch.randint(0, h - th + 1, size=(1,)).item()
        left = torch.randint(0, w - tw + 1, size=(1,)).item()
        return a[top : top + th, left : left + tw]

    transform = T.RandomCrop(size, padding, pad_if_needed, fill)
    for k, img in enumerate(images):
        if img.mode == "L" and isinstance(fill, tuple):
            continue  # a 3-colour fill for a 1-band image is refused (tested below)
        try:
            expected, got = assert_same_draws(k, reference, transform, img)
        except ValueError as exc:  # the crop does not fit: torchvision's error
            assert "is larger than input image size" in str(exc)
            with pytest.raises(ValueError, match="is larger than input image size"):
                reference(img)
            continue
        assert np.array_equal(np.asarray(got), expected)


def test_random_crop_padding_modes_and_errors(images):
    img = images[3]
    for mode in ("edge", "reflect", "symmetric"):
        torch.manual_seed(0)
        got = T.RandomCrop((img.height + 6, img.width + 10), padding=(5, 3), padding_mode=mode)(img)
        assert np.array_equal(
            np.asarray(got), np.pad(np.asarray(img), ((3, 3), (5, 5), (0, 0)), mode)
        )
    with pytest.raises(ValueError, match="is larger than input image size"):
        T.RandomCrop(1000)(img)
    with pytest.raises(ValueError, match="Padding mode should be"):
        T.RandomCrop(10, padding=1, padding_mode="wrap")(img)
    with pytest.raises(ValueError, match="does not match the number of channels"):
        T.RandomCrop(10, padding=1, fill=(1, 2))(img)
    with pytest.raises(ValueError, match="Padding must be an int or a 1, 2, or 4"):
        T.RandomCrop(10, padding=(1, 2, 3))(img)


def test_random_crop_get_params(images):
    img = images[0]
    expected_state = None
    for seed in range(3):
        torch.manual_seed(seed)
        top = torch.randint(0, img.height - 50 + 1, size=(1,)).item()
        left = torch.randint(0, img.width - 40 + 1, size=(1,)).item()
        expected_state = torch.get_rng_state()
        torch.manual_seed(seed)
        assert T.RandomCrop.get_params(img, (50, 40)) == (top, left, 50, 40)
        assert torch.equal(torch.get_rng_state(), expected_state)
    state = torch.get_rng_state()
    assert T.RandomCrop.get_params(img, (img.height, img.width)) == (0, 0, img.height, img.width)
    assert torch.equal(torch.get_rng_state(), state)  # the whole image: nothing drawn


# -- flips, grayscale ------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_flips_draw_rand_and_flip(images, p):
    for cls, axis in ((T.RandomHorizontalFlip, 1), (T.RandomVerticalFlip, 0)):

        def reference(img, axis=axis):
            a = np.asarray(img)
            return np.flip(a, axis) if torch.rand(1) < p else a

        for seed, img in enumerate(images[:4]):
            expected, got = assert_same_draws(seed, reference, cls(p), img)
            assert np.array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_is_pillows_integer_luma(images, channels):
    for img in images:
        a = np.asarray(img.convert("RGB")).astype(np.int64)
        luma = (a[..., 0] * 19595 + a[..., 1] * 38470 + a[..., 2] * 7471 + 0x8000) >> 16
        expected = np.repeat(luma[..., None], channels, axis=2).squeeze(2 if channels == 1 else ())
        got = T.Grayscale(channels)(img)
        assert got.mode == ("L" if channels == 1 else "RGB")
        assert np.array_equal(np.asarray(got), expected.astype(np.uint8))
    with pytest.raises(ValueError, match="either 1 or 3"):
        T.Grayscale(2)(images[0])


# -- to tensors, dtypes, Normalize ---------------------------------------------------------


def test_to_tensor_and_pil_to_tensor(images):
    for img in images:
        a = np.asarray(img)
        chw = (a[..., None] if a.ndim == 2 else a).transpose(2, 0, 1)
        expected = torch.from_numpy(chw.astype(np.float32) / np.float32(255))
        got = T.ToTensor()(img)
        assert got.dtype == torch.float32 and got.is_contiguous()
        assert torch.equal(got, expected)
        assert torch.equal(T.ToTensor()(np.array(img)), expected)  # an H x W (x C) array too
        got = T.PILToTensor()(img)
        assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(chw.copy()))
    with pytest.raises(TypeError, match="pic should be PIL Image or ndarray"):
        T.ToTensor()(torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="pic should be PIL Image"):
        T.PILToTensor()(np.zeros((4, 4, 3), np.uint8))


def test_to_tensor_follows_the_default_dtype(images):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert T.ToTensor()(images[3]).dtype == torch.float64
    finally:
        torch.set_default_dtype(previous)


def test_normalize_per_channel_in_float32(images):
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = T.ToTensor()(images[0])
    expected = x.numpy().copy()
    for c in range(3):
        expected[c] = (expected[c] - np.float32(mean[c])) / np.float32(std[c])
    got = T.Normalize(mean, std)(x)
    assert torch.equal(got, torch.from_numpy(expected))
    assert got.data_ptr() != x.data_ptr()
    same = T.Normalize(mean, std, inplace=True)(x)
    assert same.data_ptr() == x.data_ptr() and torch.equal(same, got)
    with pytest.raises(TypeError, match="Tensor Image"):
        T.Normalize(mean, std)(images[0])
    with pytest.raises(TypeError, match="should be a float tensor"):
        T.Normalize(mean, std)(T.PILToTensor()(images[0]))
    with pytest.raises(ValueError, match="std evaluated to zero"):
        T.Normalize(mean, [0.2, 0.0, 0.2])(got)


def test_convert_image_dtype_v1_rules():
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    assert torch.equal(T.ConvertImageDtype(torch.float32)(u8), u8.float() / 255)
    assert torch.equal(T.ConvertImageDtype(torch.int16)(u8), u8.to(torch.int16) * 128)
    f = torch.linspace(0, 1, 101).view(1, 1, 101)
    assert torch.equal(T.ConvertImageDtype(torch.uint8)(f), (f * (256 - 1e-3)).to(torch.uint8))
    i16 = torch.tensor([[[0, 255, 32767]]], dtype=torch.int16)
    assert torch.equal(
        T.ConvertImageDtype(torch.uint8)(i16), torch.tensor([[[0, 1, 255]]], dtype=torch.uint8)
    )
    assert T.ConvertImageDtype(torch.uint8)(u8) is u8
    with pytest.raises(RuntimeError, match="cannot be performed safely"):
        T.ConvertImageDtype(torch.int32)(f)


def test_to_dtype_v2_rules(images):
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    # v2 scales int to float by multiplying with 1 / max (not v1's division)
    assert torch.equal(T.ToDtype(torch.float32, scale=True)(u8), u8.float().mul_(1.0 / 255))
    assert torch.equal(T.ToDtype(torch.float32)(u8), u8.float())
    assert torch.equal(T.ToDtype(torch.int16, scale=True)(u8), u8.to(torch.int16) << 7)
    assert T.ToDtype(torch.float32)(images[0]) is images[0]  # PIL images pass through
    with pytest.raises(TypeError, match="torch.dtype"):
        T.ToDtype({torch.Tensor: torch.float32})


# -- tensor inputs: torchvision's tensor semantics ---------------------------------------


def test_geometry_on_tensors(images):
    x = T.PILToTensor()(images[2]).contiguous()  # 3 x H x W uint8
    _, h, w = x.shape
    assert torch.equal(T.RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(T.RandomVerticalFlip(1.0)(x), x.flip(-2))
    got = T.CenterCrop((h + 3, w + 4))(x)
    expected = torch.zeros(3, h + 3, w + 4, dtype=torch.uint8)
    expected[:, 1 : 1 + h, 2 : 2 + w] = x
    assert torch.equal(got, expected)
    torch.manual_seed(3)
    i, j, ch, cw = T.RandomResizedCrop.get_params(x, (0.08, 1.0), (3 / 4, 4 / 3))
    torch.manual_seed(3)
    got = T.RandomResizedCrop((40, 50))(x)
    crop = x[None, :, i : i + ch, j : j + cw].float()
    resized = torch.nn.functional.interpolate(
        crop, size=[40, 50], mode="bilinear", align_corners=False, antialias=True
    )
    assert torch.equal(got, resized[0].round().to(torch.uint8))
    got = T.Resize((30, 20), interpolation=InterpolationMode.NEAREST)(x.float())
    assert torch.equal(got, torch.nn.functional.interpolate(x[None].float(), size=[30, 20])[0])
    gray = T.Grayscale(3)(x.float())
    luma = 0.2989 * x[0].float() + 0.587 * x[1].float() + 0.114 * x[2].float()
    assert torch.equal(gray, luma.expand(3, h, w))
    padded = T.RandomCrop((h + 4, w + 2), padding=(1, 2), padding_mode="reflect")(x)
    assert torch.equal(
        padded, torch.from_numpy(np.pad(x.numpy(), ((0, 0), (2, 2), (1, 1)), "reflect"))
    )


def test_compose_and_reprs():
    t = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()])
    text = repr(t)
    assert text.startswith("Compose(") and "RandomResizedCrop(size=(224, 224)" in text
    assert "RandomHorizontalFlip(p=0.5)" in text and "ToTensor()" in text
    assert isinstance(T.RandomResizedCrop(3), torch.nn.Module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert T.Compose([lambda x: x + 1, lambda x: x * 2])(3) == 8
