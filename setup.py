"""Builds ferry and its C++ extension ferry._C against the torch that is installed.

Build without isolation (`pip install --no-build-isolation .`, or `make build`): an
isolated build environment would download a fresh torch and build against that one.
"""

from __future__ import annotations

import glob
import os

from setuptools import setup

try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError as exc:  # pragma: no cover - depends on how the build was started
    raise SystemExit(
        "ferry builds against the installed torch, and none was found "
        f"({exc}). Install torch first, then build without isolation: "
        "`pip install --no-build-isolation .` (or `make build`)."
    ) from exc

HERE = os.path.dirname(os.path.abspath(__file__))


def sources() -> list[str]:
    found: list[str] = []
    for part in ("core", "torch", "bindings"):
        found += glob.glob(os.path.join("csrc", part, "*.cpp"), root_dir=HERE)
    return sorted(found)


cxx_flags = ["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
if os.environ.get("FERRY_DEBUG"):
    cxx_flags = ["-O0", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        CppExtension(
            "ferry._C",
            sources(),
            extra_compile_args={"cxx": cxx_flags},
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
