"""ferry._C's image pipeline against Pillow, the pixel reference.

Decoding (JPEG and PNG of every kind, as ``Image.open(f).convert("RGB")``), crop, resize
(each filter, up and down, odd and tiny sizes), pad, flips, grayscale and the tensor stage
(against torch's own arithmetic) must match exactly. The test images are real photographs
from scikit-image re-encoded here, in tmp_path; nothing binary is committed.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

Image = pytest.importorskip("PIL.Image")
ImageOps = pytest.importorskip("PIL.ImageOps")
skdata = pytest.importorskip("skimage.data")

from ferry import _ext, backend_info  # noqa: E402

_C = _ext.load()
CODECS = _C.image_codecs()
needs_jpeg = pytest.mark.skipif("jpeg" not in CODECS, reason="built without libjpeg")
needs_png = pytest.mark.skipif("png" not in CODECS, reason="built without libpng")

# PIL warns that palette files with tRNS bytes "should be converted to RGBA": these tests
# convert to RGB on purpose, as torchvision's loader does.
pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency:UserWarning")

NEAREST, BILINEAR, BICUBIC = 0, 2, 3
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


@functools.cache
def photo(name: str) -> np.ndarray:
    return np.ascontiguousarray(getattr(skdata, name)())


def pil_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def hwc(path: Path, ops: list[tuple] = ()) -> np.ndarray:
    return _C.load_image(str(path), [*ops, ("hwc",)]).numpy()


def assert_same(got: np.ndarray, expect: np.ndarray, what: str) -> None:
    assert got.shape == expect.shape, f"{what}: shape {got.shape} != {expect.shape}"
    diff = np.abs(got.astype(int) - expect.astype(int))
    assert diff.max(initial=0) == 0, (
        f"{what}: max diff {diff.max()}, {np.count_nonzero(diff)} of {diff.size} values differ"
    )


# JPEG variants: (name, photo, PIL mode, save options)
JPEG_VARIANTS = [
    ("q75_420", "astronaut", "RGB", {"quality": 75, "subsampling": 2}),
    ("q95_444", "chelsea", "RGB", {"quality": 95, "subsampling": 0}),
    ("q85_422", "coffee", "RGB", {"quality": 85, "subsampling": 1}),
    ("q90_420_progressive", "rocket", "RGB", {"quality": 90, "progressive": True}),
    (
        "q80_422_progressive",
        "astronaut",
        "RGB",
        {"quality": 80, "subsampling": 1, "progressive": True},
    ),
    ("gray", "camera", "L", {"quality": 90}),
    ("gray_progressive", "coins", "L", {"quality": 75, "progressive": True}),
    ("cmyk", "coffee", "CMYK", {"quality": 90}),
    ("odd_size_420", "chelsea", "RGB", {"quality": 88, "crop": (3, 5, 404, 268)}),
    ("restart_markers", "coffee", "RGB", {"quality": 80, "restart_marker_rows": 1}),
]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("jpegs")
    out = {}
    for name, source, mode, options in JPEG_VARIANTS:
        options = dict(options)
        im = Image.fromarray(photo(source))
        if "crop" in options:
            im = im.crop(options.pop("crop"))
        im = im.convert(mode)
        out[name] = root / f"{name}.jpg"
        im.save(out[name], "JPEG", **options)
    return out


# --- a PNG writer for every colour type, bit depth and interlacing (PIL writes few) ---

ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
SAMPLES_PER_PIXEL = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _pack_rows(samples: np.ndarray, bits: int) -> list[bytes]:
    if bits == 16:
        return [row.astype(">u2").tobytes() for row in samples]
    if bits == 8:
        return [row.astype(np.uint8).tobytes() for row in samples]
    rows = []
    for row in samples:
        bits_of = np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - bits :]
        rows.append(np.packbits(bits_of.reshape(-1)).tobytes())
    return rows


def png_bytes(samples, color_type, bits, interlaced=False, palette=None, trns=None) -> bytes:
    """samples: (height, width * samples_per_pixel) ints below 2**bits."""
    height = samples.shape[0]
    spp = SAMPLES_PER_PIXEL[color_type]
    width = samples.shape[1] // spp
    raw = b""
    passes = ADAM7 if interlaced else ((0, 0, 1, 1),)
    pixels = samples.reshape(height, width, spp)
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + r for r in _pack_rows(sub.reshape(sub.shape[0], -1), bits))
    ihdr = struct.pack(">IIBBBBB", width, height, bits, color_type, 0, 0, int(interlaced))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    if palette is not None:
        out += _chunk(b"PLTE", bytes(palette))
    if trns is not None:
        out += _chunk(b"tRNS", bytes(trns))
    return out + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


PNG_KINDS = [
    (0, 1),
    (0, 2),
    (0, 4),
    (0, 8),
    (0, 16),
    (2, 8),
    (2, 16),
    (3, 1),
    (3, 2),
    (3, 4),
    (3, 8),
    (4, 8),
    (4, 16),
    (6, 8),
    (6, 16),
]


def png_samples(color_type: int, bits: int) -> np.ndarray:
    """A photo's pixels as samples of the colour type and depth (alpha: a ramp)."""
    rgb = photo("chelsea")[::3, ::3].astype(np.int64)  # 100 x 151: odd width
    gray = np.asarray(Image.fromarray(photo("chelsea")[::3, ::3]).convert("L"), dtype=np.int64)
    h, w = gray.shape
    alpha = np.broadcast_to((np.arange(w) * 255 // max(w - 1, 1))[None, :], (h, w))
    scale = (1 << bits) - 1
    if color_type in (0, 4):
        planes = [gray * scale // 255 if bits <= 8 else gray * 257 + (np.arange(w) % 7)[None, :]]
    elif color_type == 3:
        planes = [gray >> (8 - bits)]
    else:
        planes = [rgb[..., c] * 257 + 3 if bits == 16 else rgb[..., c] for c in range(3)]
    if color_type in (4, 6):
        planes.append(alpha * 257 if bits == 16 else alpha)
    return np.stack(planes, axis=-1).reshape(h, -1)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pngs")
    out = {}
    for color_type, bits in PNG_KINDS:
        for interlaced in (False, True):
            palette = trns = None
            if color_type == 3:
                n = 1 << bits
                # fewer entries than indices: PIL shows the missing ones as black
                palette = [
                    (i * 53 + c * 91) % 256 for i in range(max(1, n - n // 4)) for c in range(3)
                ]
                trns = [0, 128]
            elif color_type in (0, 2):
                trns = [0, 1] * (1 if color_type == 0 else 3)
            name = f"type{color_type}_{bits}bit{'_interlaced' if interlaced else ''}"
            out[name] = root / f"{name}.png"
            data = png_bytes(
                png_samples(color_type, bits), color_type, bits, interlaced, palette, trns
            )
            out[name].write_bytes(data)
    return out


# --- decoding ---


@needs_jpeg
@pytest.mark.parametrize("variant", [v[0] for v in JPEG_VARIANTS])
def test_jpeg_decode_is_pils(jpegs, variant):
    path = jpegs[variant]
    assert_same(hwc(path), np.asarray(pil_rgb(path)), variant)
    assert _C.image_info(str(path)) == Image.open(path).size


@needs_png
@pytest.mark.parametrize(
    "kind", [f"type{t}_{b}bit{i}" for t, b in PNG_KINDS for i in ("", "_interlaced")]
)
def test_png_decode_is_pils(pngs, kind):
    path = pngs[kind]
    assert_same(hwc(path), np.asarray(pil_rgb(path)), kind)
    assert _C.image_info(str(path)) == Image.open(path).size


# --- crop and resize of decoded photos ---


def random_crops(width: int, height: int, count: int, seed: int):
    """(top, left, h, w) boxes: inside, across the edges, and the whole image."""
    g = torch.Generator().manual_seed(seed)
    out = [(0, 0, height, width)]
    for _ in range(count):
        h = int(torch.randint(1, height + 1, (1,), generator=g))
        w = int(torch.randint(1, width + 1, (1,), generator=g))
        top = int(torch.randint(-h // 4, height - h + h // 4 + 1, (1,), generator=g))
        left = int(torch.randint(-w // 4, width - w + w // 4 + 1, (1,), generator=g))
        out.append((top, left, h, w))
    return out


@needs_jpeg
@pytest.mark.parametrize(
    "variant", ["q75_420", "q85_422", "q90_420_progressive", "gray", "cmyk", "odd_size_420"]
)
@pytest.mark.parametrize("interp", [NEAREST, BILINEAR, BICUBIC])
def test_jpeg_crop_then_resize_is_pils(jpegs, variant, interp):
    path = jpegs[variant]
    full = pil_rgb(path)
    g = torch.Generator().manual_seed(interp)
    for k, (top, left, h, w) in enumerate(random_crops(*full.size, count=12, seed=k_seed(variant))):
        # RandomResizedCrop's 224, odd sizes, upscales and a 1-pixel side
        size = [(224, 224), (97, 131), (2 * h + 1, w + 3), (1, 7)][k % 4]
        size = size if k % 5 else (int(torch.randint(1, 300, (1,), generator=g)), 61)
        ops = [("crop", top, left, h, w), ("resize", size[0], size[1], interp)]
        expect = full.crop((left, top, left + w, top + h)).resize((size[1], size[0]), interp)
        assert_same(hwc(path, ops), np.asarray(expect), f"{variant} {ops}")


def k_seed(name: str) -> int:
    return zlib.crc32(name.encode())


@needs_png
@pytest.mark.parametrize("interp", [NEAREST, BILINEAR, BICUBIC])
def test_png_crop_then_resize_is_pils(pngs, interp):
    for kind in ("type2_8bit", "type0_8bit_interlaced", "type3_4bit"):
        path = pngs[kind]
        full = pil_rgb(path)
        for top, left, h, w in random_crops(*full.size, count=6, seed=k_seed(kind)):
            for size in ((224, 224), (h // 3 + 1, w // 2 + 1), (h * 2, w * 3)):
                ops = [("crop", top, left, h, w), ("resize", *size, interp)]
                expect = full.crop((left, top, left + w, top + h)).resize(size[::-1], interp)
                assert_same(hwc(path, ops), np.asarray(expect), f"{kind} {ops}")


@needs_png
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 37), (40, 3)])
def test_tiny_images_resize_as_pil(tmp_path, shape):
    h, w = shape
    pixels = photo("astronaut")[200 : 200 + h, 100 : 100 + w]
    path = tmp_path / "tiny.png"
    Image.fromarray(pixels).save(path)
    for interp in (NEAREST, BILINEAR, BICUBIC):
        for size in ((1, 1), (1, 5), (7, 1), (224, 224), (h + 1, w * 2), (max(h // 2, 1), w)):
            expect = Image.fromarray(pixels).resize(size[::-1], interp)
            assert_same(
                hwc(path, [("resize", *size, interp)]), np.asarray(expect), f"{shape}->{size}"
            )


@needs_jpeg
def test_resize_chain_and_centre_crop_as_pil(jpegs):
    # Resize(256) then CenterCrop(224), the evaluation pipeline: a whole-image resize first.
    path = jpegs["q75_420"]
    full = pil_rgb(path)
    ops = [("resize", 256, 256, BILINEAR), ("crop", 16, 16, 224, 224)]
    expect = full.resize((256, 256), BILINEAR).crop((16, 16, 240, 240))
    assert_same(hwc(path, ops), np.asarray(expect), "resize then crop")


# --- pad, flips, grayscale ---


@needs_jpeg
def test_pad_flips_and_grayscale_as_pil(jpegs):
    path = jpegs["q95_444"]
    full = pil_rgb(path)
    assert_same(hwc(path, [("hflip",)]), np.asarray(full.transpose(Image.FLIP_LEFT_RIGHT)), "hflip")
    assert_same(hwc(path, [("vflip",)]), np.asarray(full.transpose(Image.FLIP_TOP_BOTTOM)), "vflip")
    padded = ImageOps.expand(full, (3, 5, 7, 2), fill=(9, 9, 9))
    assert_same(hwc(path, [("pad", 3, 5, 7, 2, 9)]), np.asarray(padded), "pad")
    gray = np.asarray(full.convert("L"))
    assert_same(hwc(path, [("gray", 1)]), gray[..., None], "gray 1")
    assert_same(hwc(path, [("gray", 3)]), np.dstack([gray] * 3), "gray 3")
    # grayscale after a resize, flips after a crop: ops apply in order
    ops = [("crop", 10, 20, 200, 300), ("hflip",), ("resize", 50, 60, BICUBIC), ("gray", 1)]
    expect = full.crop((20, 10, 320, 210)).transpose(Image.FLIP_LEFT_RIGHT)
    expect = expect.resize((60, 50), BICUBIC).convert("L")
    assert_same(hwc(path, ops), np.asarray(expect)[..., None], "chain")


@needs_jpeg
def test_gray_files_stay_gray_through_every_op(jpegs):
    path = jpegs["gray"]
    full = pil_rgb(path)
    ops = [
        ("crop", -5, 30, 300, 280),
        ("resize", 99, 101, BILINEAR),
        ("vflip",),
        ("pad", 1, 2, 3, 4, 200),
    ]
    expect = full.crop((30, -5, 310, 295)).resize((101, 99), BILINEAR)
    expect = ImageOps.expand(expect.transpose(Image.FLIP_TOP_BOTTOM), (1, 2, 3, 4), fill=(200,) * 3)
    assert_same(hwc(path, ops), np.asarray(expect), "gray file")
    assert_same(hwc(path, [("gray", 1)]), np.asarray(full.convert("L"))[..., None], "L of gray")


# --- the tensor stage, as torch computes it ---


@needs_jpeg
def test_tensor_stages_are_torchs(jpegs):
    path = jpegs["q85_422"]
    ops = [("crop", 30, 40, 300, 310), ("resize", 224, 224, BILINEAR)]
    array = np.asarray(pil_rgb(path).crop((40, 30, 350, 330)).resize((224, 224), BILINEAR))
    x = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # PILToTensor
    got = _C.load_image(str(path), [*ops, ("pil_to_tensor",)])
    assert got.dtype == torch.uint8 and torch.equal(got, x)
    to_tensor = x.float().div(255)  # ToTensor
    assert torch.equal(_C.load_image(str(path), [*ops, ("to_tensor",)]), to_tensor)
    mean = torch.as_tensor(MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(STD, dtype=torch.float32).view(-1, 1, 1)
    normalized = to_tensor.clone().sub_(mean).div_(std)  # Normalize
    got = _C.load_image(str(path), [*ops, ("to_tensor", MEAN, STD)])
    assert got.dtype == torch.float32 and torch.equal(got, normalized)
    # one mean/std broadcast over the channels, and a 1-channel image
    got = _C.load_image(str(path), [*ops, ("gray", 1), ("to_tensor", [0.5], [0.25])])
    gray = torch.from_numpy(np.asarray(Image.fromarray(array).convert("L")).copy())[None]
    assert torch.equal(got, gray.float().div(255).sub_(0.5).div_(0.25))


@needs_jpeg
def test_batches_equal_samples_on_any_number_of_threads(jpegs):
    paths = [str(jpegs[v[0]]) for v in JPEG_VARIANTS] * 2
    ops_list = []
    for k in range(len(paths)):
        ops = [("crop", 5 * k - 20, 3 * k, 150 + k, 170 - k), ("resize", 64, 48, BILINEAR)]
        ops_list.append([*ops, *([("hflip",)] if k % 2 else []), ("to_tensor", MEAN, STD)])
    expect = torch.stack([_C.load_image(p, ops) for p, ops in zip(paths, ops_list, strict=True)])
    for threads in (1, 2, 5):
        out = torch.full((len(paths), 3, 64, 48), float("nan"))
        _C.load_images(paths, ops_list, out, threads, 0)
        assert torch.equal(out, expect)


# --- errors: untrusted files ---


@needs_jpeg
def test_corrupt_truncated_and_foreign_files_raise_naming_file_and_sample(jpegs, tmp_path):
    good = jpegs["q75_420"].read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    ops = [("crop", 0, 0, 20, 20), ("to_tensor",)]
    with pytest.raises(_C.ImageDecodeError, match=r"truncated\.jpg.*\(sample 17\).*truncated"):
        _C.load_image(str(truncated), ops, 17)
    with pytest.raises(_C.UnsupportedImageFormat, match=r"notes\.txt.*\(sample 3\)"):
        _C.load_image(str(text), ops, 3)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        _C.load_image(str(tmp_path / "missing.jpg"), ops, 0)
    # the header is whole: its size reads, as Image.open reads it
    assert _C.image_info(str(truncated)) == Image.open(truncated).size
    paths = [str(jpegs["gray"]), str(truncated), str(text)]
    out = torch.empty(3, 3, 20, 20)
    with pytest.raises(_C.ImageDecodeError, match=r"truncated\.jpg.*\(sample 11\)"):
        _C.load_images(paths, [ops] * 3, out, 2, 10)


@needs_jpeg
def test_paths_as_the_os_takes_them(jpegs, tmp_path):
    good = jpegs["q75_420"].read_bytes()
    ops = [("resize", 8, 8, BILINEAR), ("pil_to_tensor",)]
    expect = _C.load_image(str(jpegs["q75_420"]), ops)
    assert torch.equal(_C.load_image(jpegs["q75_420"], ops), expect)  # os.PathLike
    odd = bytes(tmp_path) + b"/caf\xe9.jpg"  # not UTF-8
    with open(odd, "wb") as f:
        f.write(good[:2000])
    with pytest.raises(_C.ImageDecodeError, match="truncated") as raised:
        _C.load_image(odd, ops, 4)
    assert "caf\udce9.jpg' (sample 4)" in str(raised.value)  # as os.fsdecode shows it
    with pytest.raises(_C.ImageDecodeError):
        _C.load_image(os.fsdecode(odd), ops, 4)


def _bomb_jpeg(good: bytes) -> bytes:
    sof = good.index(b"\xff\xc0")
    return good[: sof + 5] + struct.pack(">HH", 60000, 60000) + good[sof + 9 :]


def _bomb_png(good: bytes) -> bytes:
    ihdr = struct.pack(">II", 100_000, 100_000) + good[24:29]
    return good[:8] + _chunk(b"IHDR", ihdr) + good[33:]


@needs_jpeg
@needs_png
def test_decompression_bombs_are_refused_from_the_header(jpegs, pngs, tmp_path):
    for name, data in (
        ("bomb.jpg", _bomb_jpeg(jpegs["q75_420"].read_bytes())),
        ("bomb.png", _bomb_png(pngs["type2_8bit"].read_bytes())),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(_C.ImageDecodeError, match="decompression bomb"):
            _C.image_info(str(path))
        with pytest.raises(_C.ImageDecodeError, match=rf"{name}.*\(sample 5\).*decompression bomb"):
            _C.load_image(str(path), [("to_tensor",)], 5)
        with pytest.raises(Image.DecompressionBombError):  # PIL refuses the same files
            Image.open(path)


def test_bad_ops_are_value_errors(tmp_path):
    path = str(tmp_path / "x.jpg")
    for ops in (
        [("crop", 0, 0, 1)],
        [("spin",), ("to_tensor",)],
        [("resize", 4, 4, 1), ("to_tensor",)],
        [("hflip",)],
        [("to_tensor",), ("hflip",)],
        [("gray", 2), ("to_tensor",)],
    ):
        with pytest.raises(ValueError):
            _C.load_image(path, ops)


@needs_jpeg
def test_out_must_match_the_samples(jpegs):
    paths = [str(jpegs["q75_420"])]
    ops = [[("resize", 8, 8, BILINEAR), ("to_tensor",)]]
    with pytest.raises(ValueError, match=r"\[3, 8, 8\].*\[3, 8, 9\]"):
        _C.load_images(paths, ops, torch.empty(1, 3, 8, 9), 1, 0)
    with pytest.raises(ValueError, match="row per path"):
        _C.load_images(paths, ops, torch.empty(2, 3, 8, 8), 1, 0)
    with pytest.raises(ValueError):
        _C.load_images(paths, ops, torch.empty(1, 3, 8, 8, dtype=torch.uint8), 1, 0)


def test_backend_info_names_the_codecs():
    codecs = backend_info()["image_codecs"]
    assert codecs == CODECS
    assert all(isinstance(v, str) and v for v in codecs.values())


# --- images PIL decoded (other formats) go through the same ops ---


@needs_jpeg
def test_transform_image_applies_the_same_ops(jpegs):
    path = jpegs["q90_420_progressive"]
    ops = [
        ("crop", 10, -4, 200, 210),
        ("resize", 77, 66, BICUBIC),
        ("vflip",),
        ("to_tensor", MEAN, STD),
    ]
    decoded = torch.from_numpy(np.asarray(pil_rgb(path)).copy())
    assert torch.equal(_C.transform_image(decoded, ops), _C.load_image(str(path), ops))


# --- the declared-inexact fast mode ---


@needs_jpeg
def test_fast_mode_is_close_to_exact(jpegs):
    path = jpegs["q75_420"]
    diffs = []
    for top, left, h, w in random_crops(512, 512, count=10, seed=1):
        top, left = max(top, 0), max(left, 0)
        h, w = min(h, 512 - top), min(w, 512 - left)
        ops = [("crop", top, left, h, w), ("resize", 64, 64, BILINEAR), ("hwc",)]
        exact = _C.load_image(str(path), ops).numpy().astype(int)
        fast = _C.load_image(str(path), ops, fast=True).numpy().astype(int)
        diffs.append(np.abs(exact - fast))
    diffs = np.stack(diffs)
    assert diffs.mean() < 4 and diffs.max() < 128, (diffs.mean(), diffs.max())
