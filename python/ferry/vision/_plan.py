"""From a transform and an image's size to the op list of ferry's native pixel pipeline
(the format is in the vision-core interface: crop, pad, resize, flips, gray, then one
tensor stage), every random parameter drawn from torch's RNG as the transforms draw it.

A transform is described only when every part of it is a ferry transform the pipeline
can reproduce exactly (by exact type: a subclass may have changed forward()) and it ends
in a tensor. That is decided before anything is drawn, so a transform that cannot be
described leaves the RNG untouched for the Python path to draw from.
"""

from __future__ import annotations

from typing import Any

from ._functional import PIL_CODES, pil_fill, warn_antialias_ignored

Op = tuple[Any, ...]


class PlanState:
    """The image as the ops so far leave it: size, channels, and where it stands (a
    uint8 "image", or a tensor stage: "uint8", "float", with mean/std once normalised)."""

    def __init__(self, width: int = 0, height: int = 0) -> None:
        self.width = width
        self.height = height
        self.channels = 3  # the pipeline decodes to RGB, as the default loader converts
        self.stage = "image"
        self.mean: tuple[float, ...] = ()
        self.std: tuple[float, ...] = ()
        self.ops: list[Op] = []

    def crop(self, top: int, left: int, height: int, width: int) -> None:
        self.ops.append(("crop", top, left, height, width))
        self.height, self.width = height, width

    def pad(self, ltrb: list[int], fill: int) -> None:
        left, top, right, bottom = ltrb
        if left or top or right or bottom:
            self.ops.append(("pad", left, top, right, bottom, fill))
            self.width += left + right
            self.height += top + bottom

    def resize(self, height: int, width: int, interpolation: Any, antialias: Any) -> None:
        if (height, width) == (self.height, self.width):
            return  # resize returns the image itself then, and does not warn
        if antialias is False:
            warn_antialias_ignored()
        self.ops.append(("resize", height, width, PIL_CODES[interpolation]))
        self.height, self.width = height, width

    def fill_value(self, fill: Any) -> int | None:
        """The one byte a constant pad fills with, as Pillow would get it for this image;
        None where that is not one value in 0..255 (per-channel colours, bad fills)."""
        try:
            colour = pil_fill(fill, self.channels, "RGB" if self.channels == 3 else "L")
        except (TypeError, ValueError):
            return None
        values = set(colour) if isinstance(colour, tuple) else {colour}
        if len(values) != 1:
            return None
        value = values.pop()
        return value if 0 <= value <= 255 else None

    def tensor_op(self) -> Op:
        if self.stage == "uint8":
            return ("pil_to_tensor",)
        if self.mean:
            return ("to_tensor", self.mean, self.std)
        return ("to_tensor",)


class CompiledTransform:
    """A transform the native pipeline can reproduce: its steps and its tensor stage."""

    def __init__(self, steps: list[Any], final: Op) -> None:
        self.steps = steps
        self.final = final

    def draw(self, width: int, height: int) -> list[Op]:
        """The ops for one width x height image, its random parameters drawn now, in
        the transforms' order."""
        state = PlanState(width, height)
        for step in self.steps:
            step._plan_emit(state)
        state.ops.append(self.final)
        return state.ops


def compile_transform(transform: Any) -> CompiledTransform | None:
    """`transform` as steps the native pipeline reproduces, or None where it cannot.
    Draws nothing."""
    from .transforms import PLANNABLE, Compose

    steps: list[Any] = []

    def flatten(t: Any) -> bool:
        if type(t) is Compose:
            try:
                return all(flatten(s) for s in t.transforms)
            except TypeError:  # not iterable: the Python path raises it
                return False
        if type(t) in PLANNABLE:
            steps.append(t)
            return True
        return False

    if transform is None or not flatten(transform):
        return None
    state = PlanState()
    if not all(step._plan_check(state) for step in steps) or state.stage == "image":
        return None
    return CompiledTransform(steps, state.tensor_op())


def plan_sample(transform: Any, width: int, height: int) -> list[Op] | None:
    """The native pipeline's ops for `transform` applied to a width x height RGB image,
    with its random parameters drawn from torch's global RNG exactly as calling the
    transform on such an image would draw them; None (and nothing drawn) where the
    transform must run in Python: a callable ferry does not know, an option the pipeline
    does not reproduce, or a result that is not a tensor."""
    compiled = compile_transform(transform)
    return None if compiled is None else compiled.draw(width, height)
