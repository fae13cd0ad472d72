"""ImageFolder / DatasetFolder against torchvision's documented contract, on a tree built
here whose expected classes and sample order are written out by hand from that contract;
ImageList and its CSV constructor (PyTorch's custom-dataset tutorial layout)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ferry.vision import IMG_EXTENSIONS, DatasetFolder, ImageFolder, ImageList, pil_loader
from ferry.vision import transforms as T
from ferry.vision.datasets import make_dataset


def _image(path, mode="RGB", size=(6, 4), seed=0):
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(array).convert(mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        os.path.splitext(path)[1].lower()
    )
    img.save(path, format=fmt)


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


@pytest.fixture
def tree(tmp_path):
    """A class tree with the cases torchvision's rules decide: extension case, hidden and
    non-image files, nested and linked folders, files at the root."""
    root = tmp_path / "data"
    files = {
        "b_dogs/z.jpg": "RGB",
        "b_dogs/A.JPG": "RGB",
        "b_dogs/img.Png": "P",
        "b_dogs/.hidden.jpg": "RGB",
        "b_dogs/sub/x.jpeg": "L",
        "b_dogs/sub-a/w.webp": "RGBA",
        "b_dogs/sub/deeper/y.bmp": "RGB",
        "a_cats/2.pgm": "L",
        "a_cats/10.ppm": "RGB",
        "a_cats/1.tif": "CMYK",
        "a_cats/d.TIFF": "RGB",
        "elsewhere/linked.png": "LA",
    }
    for k, (rel, mode) in enumerate(files.items()):
        _image(str(root / rel), mode, seed=k)
    for rel in ("b_dogs/notes.txt", "b_dogs/anim.gif", "a_cats/jpg", "top.jpg"):
        _touch(str(root / rel))
    os.symlink(root / "elsewhere", root / "b_dogs" / "link")
    return root


def expected_samples(root):
    """torchvision's order: classes sorted; within a class, os.walk's folders sorted by
    path ('sub-a' before 'sub/...'), files sorted by name; extension matched ignoring
    case; hidden files included; linked folders followed."""
    rel = [
        ("a_cats/1.tif", 0),
        ("a_cats/10.ppm", 0),
        ("a_cats/2.pgm", 0),
        ("a_cats/d.TIFF", 0),
        ("b_dogs/.hidden.jpg", 1),
        ("b_dogs/A.JPG", 1),
        ("b_dogs/img.Png", 1),
        ("b_dogs/z.jpg", 1),
        ("b_dogs/link/linked.png", 1),
        ("b_dogs/sub/x.jpeg", 1),
        ("b_dogs/sub-a/w.webp", 1),
        ("b_dogs/sub/deeper/y.bmp", 1),
        ("elsewhere/linked.png", 2),
    ]
    return [(os.path.join(str(root), *p.split("/")), c) for p, c in rel]


def test_image_folder_contract(tree):
    ds = ImageFolder(str(tree))
    assert ds.classes == ["a_cats", "b_dogs", "elsewhere"]
    assert ds.class_to_idx == {"a_cats": 0, "b_dogs": 1, "elsewhere": 2}
    expected = expected_samples(tree)
    assert ds.samples == expected
    assert ds.imgs is ds.samples
    assert ds.targets == [c for _, c in expected]
    assert len(ds) == len(expected)
    assert ds.extensions == IMG_EXTENSIONS and ds.root == str(tree)
    assert IMG_EXTENSIONS == (
        ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
    )  # fmt: skip


def test_items_are_rgb_as_the_default_loader_converts(tree):
    ds = ImageFolder(str(tree))
    for i, (path, target) in enumerate(ds.samples):
        img, got_target = ds[i]
        assert got_target == target and img.mode == "RGB"
        with Image.open(path) as original:
            expected = np.asarray(original.convert("RGB"))
        assert np.array_equal(np.asarray(img), expected)


def test_transforms_and_target_transforms_apply_in_order(tree):
    calls = []
    ds = ImageFolder(
        tree,  # a Path root too
        transform=lambda img: calls.append("t") or img.size,
        target_transform=lambda t: calls.append("tt") or t + 100,
    )
    size, target = ds[3]
    assert calls == ["t", "tt"] and target == ds.targets[3] + 100
    assert size == Image.open(ds.samples[3][0]).size


def test_is_valid_file_gets_the_path_and_replaces_extensions(tree):
    seen = []

    def only_pngs(path):
        seen.append(path)
        return path.endswith(".png")

    ds = ImageFolder(str(tree), is_valid_file=only_pngs, allow_empty=True)
    assert ds.samples == [
        (str(tree / "b_dogs" / "link" / "linked.png"), 1),
        (str(tree / "elsewhere" / "linked.png"), 2),
    ]
    assert str(tree / "b_dogs" / "notes.txt") in seen
    assert ds.extensions is None


def test_empty_class_errors_as_torchvision(tree):
    (tree / "c_empty").mkdir()
    _touch(str(tree / "c_empty" / "readme.txt"))
    with pytest.raises(FileNotFoundError) as exc:
        ImageFolder(str(tree))
    assert str(exc.value) == (
        "Found no valid file for the classes c_empty. Supported extensions are: "
        ".jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp"
    )
    with pytest.raises(FileNotFoundError) as exc:
        ImageFolder(str(tree), is_valid_file=lambda p: "cats" in p)
    assert str(exc.value) == "Found no valid file for the classes b_dogs, c_empty, elsewhere. "
    ds = ImageFolder(str(tree), allow_empty=True)
    assert ds.class_to_idx["c_empty"] == 2 and 2 not in ds.targets and 3 in ds.targets


def test_missing_classes_and_roots(tmp_path):
    _touch(str(tmp_path / "lonely.jpg"))
    with pytest.raises(FileNotFoundError) as exc:
        ImageFolder(str(tmp_path))
    assert str(exc.value) == f"Couldn't find any class folder in {tmp_path}."
    with pytest.raises(FileNotFoundError):
        ImageFolder(str(tmp_path / "nowhere"))


def test_dataset_folder_argument_rules(tree):
    with pytest.raises(ValueError, match="Both extensions and is_valid_file cannot be None"):
        DatasetFolder(str(tree), pil_loader, extensions=(".jpg",), is_valid_file=lambda p: True)
    with pytest.raises(ValueError, match="Both extensions and is_valid_file cannot be None"):
        DatasetFolder(str(tree), pil_loader)
    with pytest.raises(ValueError, match="The class_to_idx parameter cannot be None"):
        DatasetFolder.make_dataset(str(tree), None, extensions=(".jpg",))
    with pytest.raises(ValueError, match="must have at least one entry"):
        make_dataset(str(tree), {}, extensions=(".jpg",))
    ds = DatasetFolder(str(tree), np.load, extensions=".ppm", allow_empty=True)
    assert ds.samples == [(str(tree / "a_cats" / "10.ppm"), 0)]
    assert make_dataset(str(tree), extensions=".pgm", allow_empty=True) == [
        (str(tree / "a_cats" / "2.pgm"), 0)
    ]


def test_find_classes_can_be_overridden(tree):
    class OnlyDogs(ImageFolder):
        def find_classes(self, directory):
            return ["b_dogs"], {"b_dogs": 7}

    ds = OnlyDogs(str(tree))
    assert ds.classes == ["b_dogs"] and set(ds.targets) == {7}
    assert len(ds) == 8


def test_home_is_expanded(tree, monkeypatch):
    monkeypatch.setenv("HOME", str(tree.parent))
    ds = ImageFolder("~/data")
    assert ds.root == str(tree) and len(ds) == 13


def test_datasets_pickle(tree):
    ds = ImageFolder(str(tree), transform=T.Compose([T.Resize(3), T.ToTensor()]))
    ds._native_size(0)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.samples == ds.samples and copy.classes == ds.classes
    torch.manual_seed(0)
    assert torch.equal(copy[1][0], ds[1][0])


# -- ImageList ------------------------------------------------------------------------


def test_image_list(tree):
    files = [("a_cats/10.ppm", 4), ("b_dogs/A.JPG", 2), (tree / "b_dogs" / "z.jpg", 9)]
    ds = ImageList(files, root=str(tree), target_transform=lambda t: -t)
    assert ds.samples == [
        (str(tree / "a_cats" / "10.ppm"), 4),
        (str(tree / "b_dogs" / "A.JPG"), 2),
        (str(tree / "b_dogs" / "z.jpg"), 9),  # an absolute path stays itself
    ]
    assert ds.targets == [4, 2, 9] and len(ds) == 3
    img, target = ds[1]
    assert target == -2 and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(pil_loader(ds.samples[1][0])))
    assert ImageList([("/x/a.png", "cat")]).samples == [("/x/a.png", "cat")]
    with pytest.raises(ValueError, match="sample 1 must be a \\(file, label\\) pair"):
        ImageList([("a.png", 1), "b.png"])


@pytest.mark.parametrize(
    "text, header, expected",
    [
        ("A.JPG,0\nz.jpg,1\n", None, [("A.JPG", 0), ("z.jpg", 1)]),
        ("file,label\nA.JPG, 3\n\nz.jpg,1,extra\n", None, [("A.JPG", 3), ("z.jpg", 1)]),
        ("A.JPG,dog\nz.jpg,cat\n", None, [("A.JPG", "dog"), ("z.jpg", "cat")]),
        ("name,kind\nA.JPG,dog\n", True, [("A.JPG", "dog")]),
        ("A.JPG,0\nz.jpg,1\n", True, [("z.jpg", 1)]),
        ("\ufefffile,label\nA.JPG,0\n", None, [("A.JPG", 0)]),
    ],
)
def test_image_list_from_csv(tree, tmp_path, text, header, expected):
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(text, encoding="utf-8")
    ds = ImageList.from_csv(csv_file, tree / "b_dogs", header=header, transform=T.PILToTensor())
    assert ds.samples == [(str(tree / "b_dogs" / f), label) for f, label in expected]
    image, label = ds[0]
    assert label == expected[0][1] and image.dtype == torch.uint8 and image.shape[0] == 3


def test_image_list_from_csv_rejects_bad_rows(tmp_path):
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("a.jpg,1\n\nb.jpg\n")
    with pytest.raises(ValueError, match=r"labels.csv, line 3: expected 'file name, label'"):
        ImageList.from_csv(csv_file, tmp_path)
