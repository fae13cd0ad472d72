"""Image datasets with torchvision's contracts: ImageFolder (and DatasetFolder) for the
``root/<class>/<image>`` layout, and ImageList for a list of (file, label), e.g. from the
annotations CSV of PyTorch's "custom dataset" tutorial. Samples load natively where ferry
can (see ImageSamples), with the same results as PIL and the transforms."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable
from typing import Any

from ._samples import ImageSamples, default_loader, pil_loader

__all__ = [
    "IMG_EXTENSIONS",
    "DatasetFolder",
    "ImageFolder",
    "ImageList",
    "default_loader",
    "find_classes",
    "has_file_allowed_extension",
    "is_image_file",
    "make_dataset",
    "pil_loader",
]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def has_file_allowed_extension(filename: str, extensions: str | tuple[str, ...]) -> bool:
    """Whether `filename` ends with one of `extensions`, ignoring case."""
    suffixes = extensions if isinstance(extensions, str) else tuple(extensions)
    return filename.lower().endswith(suffixes)


def is_image_file(filename: str) -> bool:
    return has_file_allowed_extension(filename, IMG_EXTENSIONS)


def find_classes(directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
    """The sub-folders of `directory`, sorted, and their indices."""
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
    return classes, {name: i for i, name in enumerate(classes)}


def make_dataset(
    directory: str | os.PathLike,
    class_to_idx: dict[str, int] | None = None,
    extensions: str | tuple[str, ...] | None = None,
    is_valid_file: Callable[[str], bool] | None = None,
    allow_empty: bool = False,
) -> list[tuple[str, int]]:
    """(path, class index) of every valid file under each class folder (followed links
    included), classes in sorted order, files sorted within each folder. Give exactly one
    of `extensions` and `is_valid_file` (which gets the file's path)."""
    directory = os.path.expanduser(directory)
    if class_to_idx is None:
        _, class_to_idx = find_classes(directory)
    elif not class_to_idx:
        raise ValueError("'class_to_index' must have at least one entry to collect any samples.")
    if (extensions is None) == (is_valid_file is None):
        raise ValueError(
            "Both extensions and is_valid_file cannot be None or not None at the same time"
        )
    if extensions is not None:

        def is_valid_file(path: str) -> bool:
            return has_file_allowed_extension(path, extensions)

    instances = []
    found = set()
    for class_name in sorted(class_to_idx):
        class_index = class_to_idx[class_name]
        class_dir = os.path.join(directory, class_name)
        if not os.path.isdir(class_dir):
            continue
        for root, _, names in sorted(os.walk(class_dir, followlinks=True)):
            for name in sorted(names):
                path = os.path.join(root, name)
                if is_valid_file(path):
                    instances.append((path, class_index))
                    found.add(class_name)
    empty = set(class_to_idx) - found
    if empty and not allow_empty:
        msg = f"Found no valid file for the classes {', '.join(sorted(empty))}. "
        if extensions is not None:
            listed = extensions if isinstance(extensions, str) else ", ".join(extensions)
            msg += f"Supported extensions are: {listed}"
        raise FileNotFoundError(msg)
    return instances


class DatasetFolder(ImageSamples):
    """Samples laid out as ``root/<class>/**/<file>``: classes are the sorted sub-folders
    of `root` (override ``find_classes`` to change that), targets their indices.

    Attributes (torchvision's): ``root``, ``loader``, ``extensions``, ``classes``,
    ``class_to_idx``, ``samples`` (path, class index), ``targets``, ``transform``,
    ``target_transform``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        loader: Callable[[str], Any],
        extensions: tuple[str, ...] | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        *,
        decode: str = "exact",
    ) -> None:
        self.root = os.path.expanduser(root) if isinstance(root, str) else root
        classes, class_to_idx = self.find_classes(self.root)
        samples = self.make_dataset(
            self.root,
            class_to_idx=class_to_idx,
            extensions=extensions,
            is_valid_file=is_valid_file,
            allow_empty=allow_empty,
        )
        super().__init__(samples, transform, target_transform, loader, decode=decode)
        self.extensions = extensions
        self.classes = classes
        self.class_to_idx = class_to_idx
        self.targets = [s[1] for s in samples]

    @staticmethod
    def make_dataset(
        directory: str | os.PathLike,
        class_to_idx: dict[str, int],
        extensions: tuple[str, ...] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
    ) -> list[tuple[str, int]]:
        if class_to_idx is None:
            # find_classes may be overridden, so it is not called from here
            raise ValueError("The class_to_idx parameter cannot be None.")
        return make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty)

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        return find_classes(directory)


class ImageFolder(DatasetFolder):
    """torchvision's ImageFolder: images (IMG_EXTENSIONS, any case, or the files
    `is_valid_file` accepts) under ``root/<class>/``, items ``(image, class_index)``,
    images in RGB as the default loader gives them. ``imgs`` is ``samples``."""

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        loader: Callable[[str], Any] = default_loader,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        *,
        decode: str = "exact",
    ) -> None:
        super().__init__(
            root,
            loader,
            IMG_EXTENSIONS if is_valid_file is None else None,
            transform=transform,
            target_transform=target_transform,
            is_valid_file=is_valid_file,
            allow_empty=allow_empty,
            decode=decode,
        )
        self.imgs = self.samples


class ImageList(ImageSamples):
    """Images from a list of ``(file, label)``, items ``(image, label)``; files relative to
    `root` where it is given. ``ImageList.from_csv`` reads the list from an annotations
    CSV, as in PyTorch's custom-dataset tutorial.

    Attributes: ``root``, ``samples`` (path, label), ``targets``, ``loader``,
    ``transform``, ``target_transform``.
    """

    def __init__(
        self,
        samples: Iterable[tuple[str | os.PathLike, Any]],
        root: str | os.PathLike | None = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        loader: Callable[[str], Any] = default_loader,
        *,
        decode: str = "exact",
    ) -> None:
        self.root = os.path.expanduser(root) if isinstance(root, str) else root
        resolved = []
        for i, item in enumerate(samples):
            try:
                file, label = item
            except (TypeError, ValueError):
                raise ValueError(f"sample {i} must be a (file, label) pair, got {item!r}") from None
            path = os.fspath(file)
            if self.root is not None:
                path = os.path.join(self.root, path)
            resolved.append((path, label))
        super().__init__(resolved, transform, target_transform, loader, decode=decode)
        self.targets = [label for _, label in resolved]

    @classmethod
    def from_csv(
        cls,
        annotations_file: str | os.PathLike,
        img_dir: str | os.PathLike,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        loader: Callable[[str], Any] = default_loader,
        header: bool | None = None,
        *,
        decode: str = "exact",
    ) -> ImageList:
        """The images listed in a CSV whose rows are ``file name, label`` (further columns
        are ignored), files relative to `img_dir`. Labels that are all integers become
        ints, else they stay strings. `header`: whether the first row names the columns;
        None: it does when its label is not an integer while the labels are."""
        rows = _read_rows(annotations_file)
        if header is None:
            header = (
                len(rows) > 1
                and not _is_int(rows[0][1])
                and all(_is_int(row[1]) for row in rows[1:])
            )
        if header:
            rows = rows[1:]
        labels: list[Any] = [row[1] for row in rows]
        if all(_is_int(label) for label in labels):
            labels = [int(label) for label in labels]
        samples = [(row[0], label) for row, label in zip(rows, labels, strict=True)]
        return cls(samples, img_dir, transform, target_transform, loader, decode=decode)


def _read_rows(path: str | os.PathLike) -> list[list[str]]:
    """The fields of every non-blank row, each with a file name and a label."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
        reader = csv.reader(f)
        for row in reader:
            fields = [field.strip() for field in row]
            if not any(fields):
                continue
            if len(fields) < 2 or not fields[0]:
                raise ValueError(
                    f"{os.fspath(path)}, line {reader.line_num}: expected 'file name, label', "
                    f"got {row!r}"
                )
            rows.append(fields)
    return rows


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
