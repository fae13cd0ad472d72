"""ferry's native image path (ferry.DataLoader over ferry.vision datasets, decoded in C++
threads) against torch's DataLoader over the same dataset, computed here: the same
batches bit for bit, the random draws where torch makes them, resume, errors."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import ConcatDataset, Subset
from torch.utils.data import DataLoader as TorchLoader

import ferry
from conftest import assert_same_batch, assert_same_batches
from ferry.vision import ImageFolder
from ferry.vision import transforms as T
from vision_reference import write_image_folder

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

needs_native = pytest.mark.skipif(
    not hasattr(ferry._ext.load(), "load_images"),
    reason="ferry was built without its image pipeline")


def train_transform():
    return T.Compose([T.RandomResizedCrop(48), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(MEAN, STD)])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("images"))
    write_image_folder(root, per_class=3)
    return root


def run(loader_cls, ds, *, between=None, **kwargs):
    """Every batch of an epoch; `between(k)` runs after batch k, as a training step that
    draws random numbers would."""
    torch.manual_seed(3)
    out = []
    for k, batch in enumerate(loader_cls(ds, **kwargs)):
        out.append(batch)
        if between is not None:
            between(k)
    return out


def gen(seed=9):
    return torch.Generator().manual_seed(seed)


@needs_native
@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_images_path_is_taken_and_gives_torchs_batches(folder, num_workers):
    ds = ImageFolder(folder, transform=train_transform())
    kwargs = dict(batch_size=4, shuffle=True, num_workers=num_workers)
    loader = ferry.DataLoader(ds, generator=gen(), **kwargs)
    assert iter(loader).path == "images"
    expected = run(TorchLoader, ds, generator=gen(), **kwargs)
    got = run(ferry.DataLoader, ds, generator=gen(), **kwargs)
    assert_same_batches(expected, got)


@pytest.fixture(scope="module")
def small_gray(tmp_path_factory) -> str:
    """FashionMNIST-like: 28x28 grayscale PNGs in two class folders."""
    from PIL import Image

    root = tmp_path_factory.mktemp("gray")
    g = torch.Generator().manual_seed(4)
    for k in range(10):
        (root / f"c{k % 2}").mkdir(exist_ok=True)
        pixels = torch.randint(0, 256, (28, 28), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(pixels, "L").save(root / f"c{k % 2}" / f"{k}.png")
    return str(root)


@needs_native
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_transform_that_keeps_the_files_size(small_gray, num_workers):
    # no crop nor resize: each row's shape is the file's own size, from its header
    ds = ImageFolder(small_gray, transform=T.Compose(
        [T.Grayscale(), T.ToTensor(), T.Normalize([0.5], [0.5])]))
    kwargs = dict(batch_size=4, shuffle=True, num_workers=num_workers)
    loader = ferry.DataLoader(ds, generator=gen(), **kwargs)
    assert iter(loader).path == "images"
    got = run(ferry.DataLoader, ds, generator=gen(), **kwargs)
    assert got[0][0].shape == (4, 1, 28, 28)
    assert_same_batches(run(TorchLoader, ds, generator=gen(), **kwargs), got)


@needs_native
@pytest.mark.parametrize("num_workers", [0, 2])
def test_fast_decode_gives_torchs_batches_close_to_exact(folder, num_workers):
    # the declared-inexact mode is the dataset's: torch's loader over it gives the same
    # batches, and they stay near the exact ones (same crops: same draws)
    tf = T.Compose([T.RandomResizedCrop(64), T.ToTensor()])
    fast = ImageFolder(folder, transform=tf, decode="fast")
    exact = ImageFolder(folder, transform=tf)
    kwargs = dict(batch_size=4, shuffle=True, num_workers=num_workers)
    got = run(ferry.DataLoader, fast, generator=gen(), **kwargs)
    assert_same_batches(run(TorchLoader, fast, generator=gen(), **kwargs), got)
    reference = run(ferry.DataLoader, exact, generator=gen(), **kwargs)
    diff = torch.cat([(a[0] - b[0]).abs().flatten() for a, b in zip(got, reference, strict=True)])
    assert 0 < diff.mean() < 4 / 255, diff.mean()


def test_decode_takes_exact_or_fast(folder):
    with pytest.raises(ValueError, match="decode must be one of"):
        ImageFolder(folder, decode="quick")


@needs_native
def test_without_workers_the_crops_follow_draws_between_batches(folder):
    # torch draws a batch's crops when next() asks for it: a training step that draws
    # random numbers in between moves them, and ferry must draw at the same moment
    ds = ImageFolder(folder, transform=train_transform())

    def step(k):
        torch.rand(k + 1)

    kwargs = dict(batch_size=3, shuffle=True, between=step)
    assert_same_batches(run(TorchLoader, ds, generator=gen(), **kwargs),
                        run(ferry.DataLoader, ds, generator=gen(), **kwargs))


@needs_native
def test_persistent_workers_over_epochs(folder):
    ds = ImageFolder(folder, transform=train_transform())
    kwargs = dict(batch_size=4, shuffle=True, num_workers=2, persistent_workers=True)
    t_loader = TorchLoader(ds, generator=gen(), **kwargs)
    f_loader = ferry.DataLoader(ds, generator=gen(), **kwargs)
    for _ in range(2):  # the workers' generators go on from one epoch to the next
        torch.manual_seed(5)
        expected = list(t_loader)
        torch.manual_seed(5)
        assert_same_batches(expected, list(f_loader))


@needs_native
def test_out_of_order_gives_torchs_round_robin_batches(folder):
    # torch with in_order=False gives a batch to whichever worker has room, so which
    # worker draws which crops depends on timing; ferry's emulated workers take turns,
    # which is torch's outcome when batches arrive in turn (its in_order=True run)
    ds = ImageFolder(folder, transform=train_transform())
    kwargs = dict(batch_size=4, shuffle=True, num_workers=2)
    assert_same_batches(run(TorchLoader, ds, generator=gen(), **kwargs),
                        run(ferry.DataLoader, ds, generator=gen(), in_order=False, **kwargs))


@needs_native
def test_subset_and_concat_of_image_datasets(folder):
    a = ImageFolder(folder, transform=train_transform())
    b = ImageFolder(folder, transform=T.Compose([T.Resize(60), T.CenterCrop(48),
                                                 T.ToTensor()]))
    ds = ConcatDataset([Subset(a, [5, 0, -1, 3]), b])
    assert iter(ferry.DataLoader(ds, batch_size=4)).path == "images"
    kwargs = dict(batch_size=4, shuffle=True, num_workers=2)
    assert_same_batches(run(TorchLoader, ds, generator=gen(), **kwargs),
                        run(ferry.DataLoader, ds, generator=gen(), **kwargs))


@needs_native
def test_images_of_different_sizes_fail_as_torchs_collate_fails(folder):
    ds = ImageFolder(folder, transform=T.Compose([T.Resize(40), T.PILToTensor()]))
    with pytest.raises(RuntimeError) as theirs:
        next(iter(TorchLoader(ds, batch_size=6)))
    with pytest.raises(RuntimeError) as ours:
        next(iter(ferry.DataLoader(ds, batch_size=6)))
    assert str(theirs.value) in str(ours.value)


@needs_native
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_corrupt_file_names_itself_and_spares_other_batches(folder, tmp_path,
                                                              num_workers):
    ds = ImageFolder(folder, transform=train_transform())
    path, target = ds.samples[5]
    bad = tmp_path / "bad.jpg"
    with open(path, "rb") as f:
        bad.write_bytes(f.read()[:300])  # a truncated JPEG
    ds.samples[5] = (str(bad), target)
    loader = ferry.DataLoader(ds, batch_size=4, num_workers=num_workers)
    it = iter(loader)
    first = next(it)  # samples 0..3
    with pytest.raises(Exception) as err:
        next(it)  # samples 4..7
    text = str(err.value) + "".join(getattr(err.value, "__notes__", []))
    assert "bad.jpg" in text and "5" in text
    rest = list(it)  # the batches after it are unaffected
    torch.manual_seed(3)
    assert len(rest) == len(loader) - 2
    assert first[0].shape == (4, 3, 48, 48)


@needs_native
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_gives_the_rest_of_the_uninterrupted_run(folder, num_workers):
    ds = ImageFolder(folder, transform=train_transform())
    kwargs = dict(batch_size=3, shuffle=True, num_workers=num_workers,
                  persistent_workers=num_workers > 0)
    torch.manual_seed(1)
    loader = ferry.DataLoader(ds, generator=gen(), **kwargs)
    whole = []
    state = rng = None
    for epoch in range(2):
        for k, batch in enumerate(loader):
            whole.append(batch)
            if epoch == 0 and k == 2:
                state, rng = loader.state_dict(), torch.get_rng_state()
    done = 3
    fresh = ferry.DataLoader(ds, generator=gen(), **kwargs)
    fresh.load_state_dict(state)
    torch.set_rng_state(rng)
    resumed = [b for _ in range(2) for b in fresh]
    # the rest of epoch 0, then epoch 1 (a second pass over the fresh loader)
    assert len(resumed) == len(whole) - done
    for k, batch in enumerate(resumed[: len(whole) - done]):
        assert_same_batch(whole[done + k], batch, f"batch {done + k}")


@needs_native
def test_pinned_batches(folder):
    ds = ImageFolder(folder, transform=train_transform())
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning):
            batch = next(iter(ferry.DataLoader(ds, batch_size=2, pin_memory=True)))
        assert not batch[0].is_pinned()  # as torch: no accelerator, no pinning
        return
    batch = next(iter(ferry.DataLoader(ds, batch_size=2, pin_memory=True)))
    assert batch[0].is_pinned() and batch[1].is_pinned()


@needs_native
def test_an_index_out_of_range_fails_its_own_batch_as_with_torch(folder):
    """A Subset index past the end raises torch's IndexError for its batch only, in its
    turn (planned ahead with workers), and the batches after it still come."""
    sub = Subset(ImageFolder(folder, transform=T.Compose([T.Resize((8, 8)), T.ToTensor()])),
                 list(range(12)))
    batches = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 99], [10, 11]]

    def outcomes(cls):
        it, out = iter(cls(sub, batch_sampler=batches, num_workers=2)), []
        for _ in batches:
            try:
                out.append(next(it)[1].tolist())
            except IndexError:
                out.append("IndexError")
        return out

    expected = outcomes(TorchLoader)
    assert expected[4] == "IndexError" and len(expected) == 6
    assert outcomes(ferry.DataLoader) == expected


@needs_native
def test_resume_after_a_persistent_epoch_left_early(folder):
    """An epoch left after one batch: its emulated workers had planned (drawn for) the
    batches in flight, as torch's workers had fetched them; a state taken in the next
    epoch resumes there."""
    ds = ImageFolder(folder, transform=train_transform())

    def loader():
        return ferry.DataLoader(ds, batch_size=3, shuffle=True, num_workers=2,
                                generator=gen(1), persistent_workers=True)

    def epoch(it_loader, stop=None):
        out = []
        for k, batch in enumerate(it_loader):
            out.append(batch)
            if stop is not None and k + 1 == stop:
                break
        return out

    torch.manual_seed(0)
    whole_loader = loader()
    epoch(whole_loader, stop=1)
    whole = epoch(whole_loader) + epoch(whole_loader)
    torch.manual_seed(0)
    first = loader()
    epoch(first, stop=1)
    it = iter(first)
    got = [next(it)]
    state = first.state_dict()
    del it
    fresh = loader()
    fresh.load_state_dict(state)
    got += epoch(fresh) + epoch(fresh)
    assert len(got) == len(whole)
    for k, (a, b) in enumerate(zip(whole, got, strict=True)):
        assert_same_batch(a, b, f"batch {k}")
