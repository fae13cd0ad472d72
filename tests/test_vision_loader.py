"""ferry.vision datasets are ordinary map-style datasets: torch's DataLoader over them gives
the samples indexing gives, and ferry's DataLoader gives torch's batches bit for bit (the
reference is torch's DataLoader, run here with an equal generator and global seed)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader as TorchLoader
from torch.utils.data import default_collate

import ferry
from conftest import assert_same_batches
from ferry.vision import ImageFolder, ImageList
from ferry.vision import transforms as T
from vision_reference import write_image_folder

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def train_transform():
    return T.Compose(
        [T.RandomResizedCrop(64), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
    )


def eval_transform():
    return T.Compose([T.Resize(72), T.CenterCrop(64), T.PILToTensor()])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("images"))
    write_image_folder(root, per_class=3)
    return root


def batches(loader_cls, ds, seed=0, **kwargs):
    torch.manual_seed(seed)
    return list(loader_cls(ds, **kwargs))


def test_torch_loader_gives_the_indexed_samples(folder):
    ds = ImageFolder(folder, transform=train_transform())
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(4)).tolist()
    got = batches(TorchLoader, ds, batch_size=5, sampler=order)
    torch.manual_seed(0)
    torch.empty((), dtype=torch.int64).random_()  # the loader's base seed, drawn first
    samples = [ds[i] for i in order]
    expected = [default_collate(samples[k : k + 5]) for k in range(0, len(samples), 5)]
    assert_same_batches(expected, got)


def test_torch_loader_with_workers_gives_the_indexed_samples(folder):
    ds = ImageFolder(folder, transform=eval_transform())
    got = batches(TorchLoader, ds, batch_size=4, num_workers=2)
    expected = [
        default_collate([ds[i] for i in range(k, min(k + 4, len(ds)))])
        for k in range(0, len(ds), 4)
    ]
    assert_same_batches(expected, got)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("make_transform", [train_transform, eval_transform])
def test_ferry_loader_gives_torchs_batches(folder, num_workers, make_transform):
    ds = ImageFolder(folder, transform=make_transform())
    kwargs = dict(batch_size=4, shuffle=True, num_workers=num_workers, drop_last=False)
    expected = batches(TorchLoader, ds, generator=torch.Generator().manual_seed(9), **kwargs)
    got = batches(ferry.DataLoader, ds, generator=torch.Generator().manual_seed(9), **kwargs)
    assert_same_batches(expected, got)


def test_ferry_loader_over_an_image_list(folder, tmp_path):
    train = ImageFolder(folder)
    csv_file = tmp_path / "labels.csv"
    lines = [f"{path[len(folder) + 1 :]},{label}" for path, label in train.samples]
    csv_file.write_text("file,label\n" + "\n".join(lines) + "\n")
    ds = ImageList.from_csv(csv_file, folder, transform=train_transform())
    assert ds.samples == train.samples
    kwargs = dict(batch_size=3, shuffle=True, num_workers=2)
    expected = batches(
        TorchLoader, ds, seed=2, generator=torch.Generator().manual_seed(1), **kwargs
    )
    got = batches(
        ferry.DataLoader, ds, seed=2, generator=torch.Generator().manual_seed(1), **kwargs
    )
    assert_same_batches(expected, got)
