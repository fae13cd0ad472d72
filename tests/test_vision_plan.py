"""plan_sample: the op list of the native pipeline, interpreted in Pillow and torch
(tests/vision_reference.py), gives exactly the sample the transforms give on the PIL
image, after the same torch RNG calls; where it cannot, it says so and draws nothing.
And the datasets' dispatch: with the C++ entry points present (a stand-in here, until the
C++ lands), ds[i] goes native with the same result and the same draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import ferry
from ferry.vision import ImageFolder, InterpolationMode, pil_loader, plan_sample
from ferry.vision import transforms as T
from vision_reference import FakeNative, apply_ops, photos, scaled, write_image_folder

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

PLANNABLE = {
    "imagenet_train": lambda: T.Compose(
        [T.RandomResizedCrop(96), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
    ),
    "imagenet_eval": lambda: T.Compose(
        [T.Resize(110), T.CenterCrop(96), T.ToTensor(), T.Normalize(MEAN, STD)]
    ),
    "cifar_like": lambda: T.Compose(
        [
            T.RandomCrop(64, padding=4, pad_if_needed=True, fill=3),
            T.RandomHorizontalFlip(0.7),
            T.PILToTensor(),
        ]
    ),
    "nested_uint8_to_float": lambda: T.Compose(
        [
            T.Compose([T.Resize((70, 50), interpolation=InterpolationMode.BICUBIC)]),
            T.RandomVerticalFlip(),
            T.PILToTensor(),
            T.ConvertImageDtype(torch.float32),
            T.Normalize([0.5], [0.25]),
        ]
    ),
    "gray": lambda: T.Compose(
        [T.Grayscale(), T.RandomResizedCrop((40, 30), interpolation=0), T.ToTensor()]
    ),
    "gray3_pad_if_needed": lambda: T.Compose(
        [T.Grayscale(3), T.RandomCrop((520, 90), pad_if_needed=True, fill=(7, 7, 7)), T.ToTensor()]
    ),
    "center_crop_larger": lambda: T.Compose([T.CenterCrop((601, 33)), T.PILToTensor()]),
    "resize_max_size": lambda: T.Compose(
        [T.Resize(40, max_size=50), T.ToTensor(), T.ConvertImageDtype(torch.float32)]
    ),
    "fallback_crop": lambda: T.Compose(
        [T.RandomResizedCrop(32, scale=(0.99, 1.0), ratio=(2.5, 3.0)), T.ToTensor()]
    ),
    "no_op_dtypes": lambda: T.Compose(
        [T.ToDtype(torch.float32), T.PILToTensor(), T.ToDtype(torch.uint8, scale=True)]
    ),
    "same_size_resize": lambda: T.Compose([T.CenterCrop(50), T.Resize(50), T.PILToTensor()]),
}


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    pics = photos()
    rgb = [scaled(pics[name]) for name in ("astronaut", "chelsea", "rocket")]
    return [*rgb, scaled(pics["coffee"], 45), rgb[1].rotate(90, expand=True)]


@pytest.mark.parametrize("name", sorted(PLANNABLE))
def test_plan_gives_the_transforms_sample_and_draws(images, name):
    transform = PLANNABLE[name]()
    for k, img in enumerate(images):
        for seed in (k, 100 + k):
            torch.manual_seed(seed)
            expected = transform(img)
            expected_state = torch.get_rng_state()
            torch.manual_seed(seed)
            ops = plan_sample(transform, img.width, img.height)
            assert ops is not None
            assert torch.equal(torch.get_rng_state(), expected_state), "different RNG calls"
            got = apply_ops(img, ops)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert torch.equal(got, expected), f"{name}: {ops}"


def test_plan_ops_are_plain_values():
    torch.manual_seed(0)
    ops = plan_sample(PLANNABLE["imagenet_train"](), 500, 375)
    assert ops[0][0] == "crop" and ops[1][:1] == ("resize",) and ops[1][3] == 2
    assert ops[-1][0] == "to_tensor" and len(ops[-1][1]) == 3
    flat = [v for op in ops for v in op if not isinstance(v, tuple)]
    assert all(type(v) in (str, int) for v in flat)
    # mean and std as float32 values, which torch subtracts and divides by
    assert list(ops[-1][1]) == torch.tensor(MEAN, dtype=torch.float32).tolist()


class Plus1:
    def __call__(self, x):
        return x + 1


class MyFlip(T.RandomHorizontalFlip):
    def forward(self, img):
        return img


NOT_PLANNABLE = {
    "user_callable": lambda: T.Compose([T.RandomResizedCrop(32), T.ToTensor(), Plus1()]),
    "lambda_first": lambda: T.Compose([lambda im: im, T.RandomHorizontalFlip(), T.ToTensor()]),
    "subclass": lambda: T.Compose([T.RandomResizedCrop(32), MyFlip(), T.ToTensor()]),
    "pil_result": lambda: T.Compose([T.RandomResizedCrop(32), T.RandomHorizontalFlip()]),
    "none": lambda: None,
    "box": lambda: T.Compose([T.RandomResizedCrop(32, interpolation=4), T.ToTensor()]),
    "lanczos_resize": lambda: T.Compose(
        [T.Resize(32, interpolation=InterpolationMode.LANCZOS), T.ToTensor()]
    ),
    "edge_padding": lambda: T.Compose(
        [T.RandomHorizontalFlip(), T.RandomCrop(32, padding=2, padding_mode="edge"), T.ToTensor()]
    ),
    "colour_fill": lambda: T.Compose(
        [T.RandomHorizontalFlip(), T.RandomCrop(32, padding=2, fill=(1, 2, 3)), T.ToTensor()]
    ),
    "negative_padding": lambda: T.Compose([T.RandomCrop(32, padding=-1), T.ToTensor()]),
    "v2_scaled_float": lambda: T.Compose(
        [T.RandomHorizontalFlip(), T.PILToTensor(), T.ToDtype(torch.float32, scale=True)]
    ),
    "geometry_after_tensor": lambda: T.Compose([T.ToTensor(), T.RandomHorizontalFlip()]),
    "normalize_twice": lambda: T.Compose(
        [T.ToTensor(), T.Normalize(MEAN, STD), T.Normalize(MEAN, STD)]
    ),
    "mean_for_other_channels": lambda: T.Compose(
        [T.RandomHorizontalFlip(), T.Grayscale(), T.ToTensor(), T.Normalize(MEAN, STD)]
    ),
    "float64": lambda: T.Compose([T.PILToTensor(), T.ConvertImageDtype(torch.float64)]),
}


@pytest.mark.parametrize("name", sorted(NOT_PLANNABLE))
def test_plan_declines_and_draws_nothing(images, name):
    transform = NOT_PLANNABLE[name]()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    assert plan_sample(transform, 500, 375) is None
    assert torch.equal(torch.get_rng_state(), state)


def test_plan_declines_other_default_dtypes():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert plan_sample(T.Compose([T.CenterCrop(8), T.ToTensor()]), 50, 50) is None
    finally:
        torch.set_default_dtype(previous)


def test_plan_raises_the_transforms_errors_after_the_same_draws(images):
    img = images[3]  # 45 px wide
    transform = T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(200), T.ToTensor()])
    states = []
    for run in (lambda: transform(img), lambda: plan_sample(transform, img.width, img.height)):
        torch.manual_seed(1)
        with pytest.raises(ValueError, match=r"Required crop size \(200, 200\) is larger"):
            run()
        states.append(torch.get_rng_state())
    assert torch.equal(*states)
    # a zero std is left to the Python path, which raises torch's error for the sample
    zero_std = T.Compose([T.ToTensor(), T.Normalize(MEAN, [0.1, 0.0, 0.1])])
    assert plan_sample(zero_std, 10, 10) is None
    with pytest.raises(ValueError, match="std evaluated to zero"):
        zero_std(img)
    with pytest.warns(UserWarning, match="Anti-alias option is always applied"):
        plan_sample(T.Compose([T.Resize(8, antialias=False), T.ToTensor()]), 10, 20)


# -- the datasets' dispatch ------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("images"))
    write_image_folder(root, per_class=2)
    return root


@pytest.fixture
def fake_native(monkeypatch):
    def install(with_info: bool = True) -> FakeNative:
        fake = FakeNative(with_info)
        monkeypatch.setattr(ferry._ext, "load", lambda: fake)
        return fake

    return install


def seeded_items(ds, indices, seed=11):
    torch.manual_seed(seed)
    items = [ds[i] for i in indices]
    return items, torch.get_rng_state()


def test_without_the_cpp_pipeline_samples_take_the_pil_path(folder):
    if hasattr(ferry._ext.load(), "load_image"):
        pytest.skip("the C++ pipeline is built")
    ds = ImageFolder(folder, transform=PLANNABLE["imagenet_train"]())
    torch.manual_seed(3)
    got, target = ds[4]
    torch.manual_seed(3)
    path, expected_target = ds.samples[4]
    assert target == expected_target
    assert torch.equal(got, ds.transform(pil_loader(path)))


@pytest.mark.parametrize("with_info", [True, False])
def test_native_dispatch_gives_the_pil_paths_samples(folder, fake_native, with_info):
    transform = PLANNABLE["imagenet_train"]()
    ds = ImageFolder(folder, transform=transform, target_transform=lambda t: t * 10)
    indices = list(range(len(ds))) + [-1, 0]
    expected, expected_state = seeded_items(ds, indices)  # the PIL path, or the C++ one
    # a fresh dataset: the first one cached its files' header sizes where C++ is built
    ds = ImageFolder(folder, transform=transform, target_transform=lambda t: t * 10)
    fake = fake_native(with_info)
    got, got_state = seeded_items(ds, indices)
    assert torch.equal(got_state, expected_state)
    for (e, et), (g, gt) in zip(expected, got, strict=True):
        assert et == gt and torch.equal(e, g)
    assert [c[2] for c in fake.load_calls] == [i % len(ds) for i in indices]
    if with_info:  # each header read once, then cached per sample
        assert sorted(fake.info_calls) == sorted(p for p, _ in ds.samples)


def test_native_dispatch_stays_off_for_python_transforms_and_loaders(folder, fake_native):
    fake = fake_native()
    ds = ImageFolder(folder, transform=NOT_PLANNABLE["user_callable"]())
    ds[0]
    ds = ImageFolder(folder, transform=T.ToTensor(), loader=lambda p: pil_loader(p).rotate(90))
    ds[0]
    assert fake.load_calls == [] and fake.info_calls == []


def test_native_sample_draws_what_getitem_draws(folder, fake_native):
    ds = ImageFolder(folder, transform=PLANNABLE["cifar_like"](), target_transform=str)
    assert ds.supports_native()
    for i in range(len(ds)):
        path, target = ds.samples[i]
        width, height = Image.open(path).size
        torch.manual_seed(i)
        expected_ops = plan_sample(ds.transform, width, height)
        state = torch.get_rng_state()
        torch.manual_seed(i)
        assert ds.native_sample(i) == (path, expected_ops, str(target))
        assert torch.equal(torch.get_rng_state(), state)
        assert ds._native_size(i) == (width, height)
    fake = fake_native()
    torch.manual_seed(0)
    path, ops, target = ds.native_sample(0)
    assert fake.info_calls == []  # the sizes were cached by the first pass
    torch.manual_seed(0)
    assert torch.equal(apply_ops(pil_loader(path), ops), ds[0][0])


def test_native_sample_is_none_for_the_python_path(folder):
    ds = ImageFolder(folder, transform=NOT_PLANNABLE["edge_padding"]())
    state = torch.get_rng_state()
    assert not ds.supports_native() and ds.native_sample(0) is None
    assert torch.equal(torch.get_rng_state(), state)
    ds = ImageFolder(folder, transform=T.ToTensor(), loader=lambda p: pil_loader(p).rotate(90))
    assert not ds.supports_native() and ds.native_sample(0) is None


def test_size_cache_follows_the_samples(folder, tmp_path):
    ds = ImageFolder(folder, transform=T.ToTensor())
    first = ds._native_size(0)
    other = tmp_path / "small.png"
    Image.fromarray(np.zeros((7, 9, 3), np.uint8)).save(other)
    ds.samples[0] = (str(other), 0)  # replaced in place: the cache notices the new path
    assert ds._native_size(0) == (9, 7) != first
    bmp = tmp_path / "x.bmp"
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(bmp)
    ds.samples.append((str(bmp), 1))  # a format the native decoders lack
    assert ds._native_size(len(ds) - 1) is None
    assert ds.native_sample(len(ds) - 1) is None
