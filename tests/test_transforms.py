"""ferry.ImageTransform: the torch-op path against a channel-by-channel computation written
here, argument checks, and (with a GPU) the fused CUDA kernel against the torch-op path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import ferry
from conftest import FAIL_WITHOUT_CUDA
from ferry import _ext

needs_cuda = pytest.mark.needs_cuda

OUT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = [None, "channels_first", "channels_last"]
# (N, C, H, W): batches of one, one channel, 1x1 images and sizes no tile divides.
SHAPES = [(1, 3, 1, 1), (2, 1, 7, 13), (1, 4, 33, 17), (3, 3, 7, 13), (2, 4, 1, 1)]
MEANS = [0.485, 0.456, 0.406, 0.5]
STDS = [0.229, 0.224, 0.225, 0.25]


def random_images(shape, dtype, device="cpu"):
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=dtype, device=device)
    if dtype.is_floating_point:
        return (torch.randn(shape, device=device) * 50).to(dtype)
    return torch.randint(-1000, 1000, shape, device=device).to(dtype)


def input_shape(nchw, layout, one_image=False):
    n, c, h, w = nchw
    shape = (n, h, w, c) if layout == "channels_first" else (n, c, h, w)
    return shape[1:] if one_image else shape


def expected_output(x, *, dtype, scale, mean, std, layout):
    """What ImageTransform must give, computed plainly: channel by channel in float32,
    then the layout by explicit permutes."""
    batch = x if x.dim() == 4 else x.unsqueeze(0)
    if layout == "channels_first":
        batch = batch.permute(0, 3, 1, 2)
    out = torch.empty(batch.shape, dtype=torch.float32, device=x.device)
    for c in range(batch.shape[1]):
        plane = batch[:, c].to(torch.float32) * scale
        if mean is not None:
            plane = plane - torch.tensor(mean[c], dtype=torch.float32)
        if std is not None:
            plane = plane / torch.tensor(std[c], dtype=torch.float32)
        out[:, c] = plane
    out = out.to(dtype)
    if layout == "channels_last":
        # NHWC bytes, NCHW shape: permute to NHWC, pack, view back as NCHW.
        out = out.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    return out[0] if x.dim() == 3 else out


def memory_order(t):
    """The strides that decide the layout in memory (those of dims longer than one)."""
    return [s for s, n in zip(t.stride(), t.shape, strict=True) if n > 1]


def assert_same(got, expected):
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert memory_order(got) == memory_order(expected), (got.stride(), expected.stride())
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# --- the torch-op path, on the CPU ---------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("in_dtype", [torch.uint8, torch.float32, torch.int16, torch.float16])
def test_torch_ops_match_plain_computation(in_dtype, out_dtype, layout):
    scale = 1 / 255 if in_dtype == torch.uint8 else 0.5
    for nchw in SHAPES:
        c = nchw[1]
        x = random_images(input_shape(nchw, layout), in_dtype)
        kwargs = dict(dtype=out_dtype, scale=scale, mean=MEANS[:c], std=STDS[:c], layout=layout)
        t = ferry.ImageTransform(**kwargs)
        expected = expected_output(x, **kwargs)
        assert_same(t(x), expected)
        assert_same(t.reference(x), expected)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_output_layouts(layout):
    x = random_images(input_shape((2, 3, 5, 7), layout), torch.uint8)
    out = ferry.ImageTransform(layout=layout)(x)
    assert out.shape == (2, 3, 5, 7)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        assert out.permute(0, 2, 3, 1).is_contiguous()
    else:
        assert out.is_contiguous()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
def test_one_image(layout, out_dtype):
    for nchw in SHAPES:
        c = nchw[1]
        x = random_images(input_shape(nchw, layout, one_image=True), torch.uint8)
        kwargs = dict(dtype=out_dtype, scale=1 / 255, mean=MEANS[:c], std=STDS[:c], layout=layout)
        out = ferry.ImageTransform(**kwargs)(x)
        assert out.shape == nchw[1:]
        assert_same(out, expected_output(x, **kwargs))


@pytest.mark.parametrize(
    "mean,std", [(None, None), (MEANS[:3], None), (None, STDS[:3]), ([0, 1, 2], [1, 2, 4])]
)
def test_normalisation_parts_are_optional(mean, std):
    x = random_images((2, 3, 7, 13), torch.uint8)
    kwargs = dict(dtype=torch.float32, scale=2.0, mean=mean, std=std, layout=None)
    assert_same(ferry.ImageTransform(**kwargs)(x), expected_output(x, **kwargs))


def test_channels_last_input_keeps_its_memory_format():
    x = random_images((2, 3, 7, 13), torch.uint8).contiguous(memory_format=torch.channels_last)
    for layout in (None, "channels_last"):
        out = ferry.ImageTransform(scale=1 / 255, mean=MEANS[:3], std=STDS[:3], layout=layout)(x)
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        expected = (x.float() / 255 - torch.tensor(MEANS[:3]).view(1, 3, 1, 1)) / torch.tensor(
            STDS[:3]
        ).view(1, 3, 1, 1)
        torch.testing.assert_close(out, expected)


def test_strided_and_empty_inputs():
    x = random_images((4, 3, 9, 16), torch.uint8)[::2, :, 1:, ::3]
    t = ferry.ImageTransform(scale=1 / 255, mean=MEANS[:3], std=STDS[:3])
    kwargs = dict(dtype=torch.float32, scale=1 / 255, mean=MEANS[:3], std=STDS[:3], layout=None)
    assert_same(t(x), expected_output(x, **kwargs))
    empty = ferry.ImageTransform(layout="channels_first")(
        torch.zeros(0, 5, 4, 3, dtype=torch.uint8)
    )
    assert empty.shape == (0, 3, 5, 4) and empty.dtype == torch.float32


def test_output_is_never_a_view_of_the_input():
    x = torch.rand(2, 3, 4, 4)
    out = ferry.ImageTransform()(x)
    assert out.data_ptr() != x.data_ptr()
    out.fill_(7)
    assert (x != 7).all()


def test_mean_and_std_accept_tensors_and_arrays():
    t = ferry.ImageTransform(mean=torch.tensor(MEANS[:3]), std=np.array(STDS[:3]))
    assert t.mean == pytest.approx(MEANS[:3]) and t.std == pytest.approx(STDS[:3])
    assert "ImageTransform(" in repr(t)


# --- argument checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(dtype="float32"), TypeError, "dtype must be a torch.dtype"),
        (dict(dtype=torch.int32), ValueError, "dtype must be torch.float32"),
        (dict(dtype=torch.float64), ValueError, "dtype must be torch.float32"),
        (dict(scale="1/255"), TypeError, "scale must be a real number"),
        (dict(scale=float("inf")), ValueError, "scale must be finite"),
        (dict(mean="rgb"), TypeError, "mean must be a sequence"),
        (dict(mean=0.5), TypeError, "mean must be a sequence"),
        (dict(mean=[0.5, None]), TypeError, "mean must be a sequence"),
        (dict(mean=[]), ValueError, "mean must have one value per channel"),
        (dict(std=[0.2, 0.0, 0.2]), ValueError, "std must not contain zero"),
        (dict(std=[0.2, float("nan")]), ValueError, "std must be finite"),
        (dict(mean=[0.5] * 3, std=[0.2] * 4), ValueError, "got 3 and 4 values"),
        (dict(layout="NHWC"), ValueError, "layout must be None, 'channels_first'"),
        (dict(layout=torch.channels_last), ValueError, "layout must be None"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        ferry.ImageTransform(**kwargs)


def test_bad_inputs_fail_at_call():
    t = ferry.ImageTransform(mean=MEANS[:3], std=STDS[:3])
    with pytest.raises(TypeError, match="expects a torch.Tensor"):
        t(np.zeros((1, 3, 2, 2)))
    with pytest.raises(TypeError, match="integer or floating"):
        t(torch.zeros(1, 3, 2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="integer or floating"):
        t(torch.zeros(1, 3, 2, 2, dtype=torch.complex64))
    for shape in [(3, 4), (1, 1, 3, 2, 2)]:
        with pytest.raises(ValueError, match="4-D batch or a 3-D image"):
            t(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"3 values but the input has 4 channels \(dim 1"):
        t(torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"has 4 channels \(dim 0"):
        t.reference(torch.zeros(4, 3, 3))
    nhwc = ferry.ImageTransform(mean=MEANS[:3], layout="channels_first")
    with pytest.raises(ValueError, match=r"has 2 channels \(dim 3 of shape \(1, 3, 3, 2\)"):
        nhwc(torch.zeros(1, 3, 3, 2))


def test_exported():
    assert "ImageTransform" in ferry.__all__
    assert ferry.ImageTransform is ferry.transforms.ImageTransform


def test_binding_without_kernels_says_so():
    C = _ext.load()
    if C.build_info()["cuda_kernels"]:
        pytest.skip("this build has the CUDA kernels")
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="ferry was built without its CUDA kernels"):
        C.fused_image_transform(x, torch.empty(1, 3, 2, 2), 1.0, [], [])


# --- the fused kernel, on a GPU ------------------------------------------------------------

KERNEL_IN_DTYPES = [torch.uint8, torch.float32, torch.float16, torch.bfloat16]
# The kernel takes torch's float32 steps, so only the last rounding may differ, if at all.
TOLERANCE = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls ImageTransform makes into the fused kernel's binding."""
    C = _ext.load()
    if not C.build_info()["cuda_kernels"]:
        message = "ferry was built without its CUDA kernels (nvcc missing at build time?)"
        if FAIL_WITHOUT_CUDA:
            pytest.fail(message)
        pytest.skip(message)
    calls = []
    real = C.fused_image_transform

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(C, "fused_image_transform", counting)
    return calls


def assert_close_to_reference(got, expected):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert memory_order(got) == memory_order(expected), (got.stride(), expected.stride())
    tol = TOLERANCE[got.dtype]
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


@needs_cuda
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("in_dtype", KERNEL_IN_DTYPES)
def test_kernel_matches_torch_ops(kernel_calls, in_dtype, out_dtype, layout):
    scale = 1 / 255 if in_dtype == torch.uint8 else 0.5
    shapes = SHAPES + [(5, 3, 33, 17), (1, 7, 2, 3), (2, 64, 3, 5), (1, 65, 2, 2)]
    for nchw, normalise, one_image in itertools.product(shapes, (True, False), (False, True)):
        c = nchw[1]
        mean = [0.1 * (i % 7) for i in range(c)] if normalise else None
        std = [0.2 + 0.05 * (i % 5) for i in range(c)] if normalise else None
        shape = input_shape(nchw, layout, one_image)
        x = random_images(shape, in_dtype, "cuda")
        t = ferry.ImageTransform(dtype=out_dtype, scale=scale, mean=mean, std=std, layout=layout)
        before = len(kernel_calls)
        got = t(x)
        # 65 channels with normalisation is over the kernel's table: torch ops then.
        assert len(kernel_calls) == before + (0 if normalise and c == 65 else 1)
        assert got.device == x.device
        assert_close_to_reference(got, t.reference(x))


@needs_cuda
def test_kernel_reads_channels_last_and_strided_inputs(kernel_calls):
    cl = random_images((3, 3, 7, 13), torch.uint8, "cuda").contiguous(
        memory_format=torch.channels_last
    )
    strided = random_images((4, 3, 9, 16), torch.uint8, "cuda")[::2, :, 1:, ::3]
    for x in (cl, strided):
        for layout in LAYOUTS[::2]:  # None and channels_last take NCHW-shaped input
            t = ferry.ImageTransform(
                dtype=torch.bfloat16, scale=1 / 255, mean=MEANS[:3], std=STDS[:3], layout=layout
            )
            assert_close_to_reference(t(x), t.reference(x))
    assert len(kernel_calls) == 4


@needs_cuda
def test_kernel_covers_a_batch_larger_than_its_grid(kernel_calls):
    # More pixels than 65536 blocks x 256 threads: the grid-stride loop takes the rest.
    x = random_images((350, 3, 224, 224), torch.uint8, "cuda")
    t = ferry.ImageTransform(dtype=torch.float16, scale=1 / 255, mean=MEANS[:3], std=STDS[:3])
    assert_close_to_reference(t(x), t.reference(x))
    t = ferry.ImageTransform(scale=1 / 255, layout="channels_last")
    assert_close_to_reference(t(x), t.reference(x))
    assert len(kernel_calls) == 2


@needs_cuda
def test_inputs_the_kernel_does_not_take_use_torch_ops(kernel_calls):
    t = ferry.ImageTransform(mean=MEANS[:3], std=STDS[:3])
    for x in (
        random_images((2, 3, 4, 5), torch.int16, "cuda"),
        random_images((2, 3, 4, 5), torch.float64, "cuda"),
        torch.rand(2, 3, 4, 5, device="cuda", requires_grad=True),
        torch.zeros(0, 3, 4, 5, dtype=torch.uint8, device="cuda"),
    ):
        assert_close_to_reference(t(x), t.reference(x))
    assert kernel_calls == []
    t(torch.zeros(1, 3, 2, 2, dtype=torch.uint8, device="cuda"))
    assert len(kernel_calls) == 1


@needs_cuda
def test_kernel_runs_on_the_current_stream(kernel_calls):
    src = random_images((8, 3, 64, 64), torch.uint8, "cuda")
    x = torch.zeros_like(src)
    t = ferry.ImageTransform(scale=1 / 255, mean=MEANS[:3], std=STDS[:3])
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        # A kernel launched on another stream would read x before this copy lands.
        torch.cuda._sleep(50_000_000)
        x.copy_(src)
        got = t(x)
    side.synchronize()
    assert len(kernel_calls) == 1
    assert_close_to_reference(got, t.reference(src))


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_kernel_on_a_device_other_than_the_current_one(kernel_calls):
    x = random_images((2, 3, 7, 13), torch.uint8, "cuda:1")
    t = ferry.ImageTransform(scale=1 / 255, mean=MEANS[:3], std=STDS[:3], layout="channels_last")
    with torch.cuda.device(0):
        got = t(x)
    assert got.device == x.device
    assert_close_to_reference(got, t.reference(x))


@needs_cuda
def test_binding_checks_its_arguments(kernel_calls):
    C = _ext.load()
    x = random_images((2, 3, 4, 5), torch.uint8, "cuda")
    out = torch.empty(2, 3, 4, 5, device="cuda")
    with pytest.raises(ValueError, match="same CUDA device"):
        C.fused_image_transform(x, out.cpu(), 1.0, [], [])
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        C.fused_image_transform(x, out[:1], 1.0, [], [])
    with pytest.raises(TypeError, match="input dtype"):
        C.fused_image_transform(x.int(), out, 1.0, [], [])
    with pytest.raises(TypeError, match="output dtype"):
        C.fused_image_transform(x, out.to(torch.uint8), 1.0, [], [])
    with pytest.raises(ValueError, match="contiguous or channels_last-contiguous"):
        C.fused_image_transform(x.transpose(2, 3).contiguous().transpose(2, 3), out, 1.0, [], [])
    with pytest.raises(ValueError, match="mean and std"):
        C.fused_image_transform(x, out, 1.0, [0.5] * 3, [0.5] * 2)
    with pytest.raises(ValueError, match="share memory"):
        y = out.clone()
        C.fused_image_transform(y, y, 1.0, [], [])
