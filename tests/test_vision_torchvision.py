"""Where torchvision imports (not on the CPU machines, whose torch it cannot join): ferry's
transforms and ImageFolder against torchvision's own, same seed, same pixels, same RNG
state after, same samples."""

from __future__ import annotations

import pytest
import torch

from ferry.vision import ImageFolder
from ferry.vision import transforms as T
from vision_reference import photos, scaled, write_image_folder

tv = pytest.importorskip("torchvision")
from torchvision import datasets as tv_datasets  # noqa: E402
from torchvision import transforms as tv_transforms  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# (class name, args, kwargs): built with ferry's module and with torchvision's
SPECS = {
    "train": [
        ("RandomResizedCrop", (96,), {}),
        ("RandomHorizontalFlip", (), {}),
        ("ToTensor", (), {}),
        ("Normalize", (MEAN, STD), {}),
    ],
    "eval": [("Resize", (110,), {}), ("CenterCrop", (96,), {}), ("PILToTensor", (), {})],
    "crops": [
        ("RandomCrop", (64,), {"padding": 4, "pad_if_needed": True, "fill": 9}),
        ("RandomVerticalFlip", (0.3,), {}),
        ("Grayscale", (3,), {}),
        ("ToTensor", (), {}),
    ],
    "bicubic_max_size": [
        ("Resize", (40,), {"interpolation": 3, "max_size": 60}),
        ("CenterCrop", ((70, 30),), {}),
        ("PILToTensor", (), {}),
        ("ConvertImageDtype", (torch.float32,), {}),
    ],
    "tensor_side": [
        ("PILToTensor", (), {}),
        ("RandomResizedCrop", ((50, 40),), {"antialias": True}),
        ("RandomHorizontalFlip", (), {}),
        ("ConvertImageDtype", (torch.float32,), {}),
    ],
}


def build(module, spec):
    return module.Compose([getattr(module, name)(*args, **kwargs) for name, args, kwargs in spec])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_transforms_match_torchvision(name):
    ours, theirs = build(T, SPECS[name]), build(tv_transforms, SPECS[name])
    pics = photos()
    for k, img in enumerate(scaled(pics[p]) for p in ("astronaut", "chelsea", "rocket")):
        for seed in (k, 50 + k):
            torch.manual_seed(seed)
            expected = theirs(img)
            expected_state = torch.get_rng_state()
            torch.manual_seed(seed)
            got = ours(img)
            assert torch.equal(torch.get_rng_state(), expected_state)
            assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_image_folder_matches_torchvision(tmp_path):
    write_image_folder(str(tmp_path), per_class=2)
    ours, theirs = ImageFolder(str(tmp_path)), tv_datasets.ImageFolder(str(tmp_path))
    assert ours.classes == theirs.classes and ours.class_to_idx == theirs.class_to_idx
    assert ours.samples == theirs.samples and ours.targets == theirs.targets
