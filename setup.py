"""Builds ferry and its C++ extension ferry._C against the torch that is installed.

Build without isolation (`pip install --no-build-isolation .`, or `make build`): an
isolated build environment would download a fresh torch and build against that one.

The CUDA kernels (csrc/cuda/*.cu) are built when torch has CUDA and nvcc is found;
FERRY_CUDA_KERNELS=1 insists on them (failing if either is missing), FERRY_CUDA_KERNELS=0
leaves them out. Without them the same functions exist and raise a clear error.

The image codecs link the system's libjpeg(-turbo) and libpng where a probe compiles and
links against them (Debian: libjpeg62-turbo-dev, libpng-dev); without one, ferry builds
and ferry.vision decodes that format through PIL. FERRY_WITH_JPEG / FERRY_WITH_PNG = 1
insist on the library, = 0 leave it out.
"""

from __future__ import annotations

import glob
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import setup


def check_wheel_command() -> None:
    """pip (PEP 517) builds a wheel through the `bdist_wheel` command, which setuptools has
    had since 70.1 and older ones take from the `wheel` package. With
    --no-build-isolation pip installs neither: a venv made with --system-site-packages on
    Python 3.11 brings its own setuptools 65 and no `wheel`, and the build would stop with
    "invalid command 'bdist_wheel'". Say what to install instead."""
    if not {"dist_info", "bdist_wheel", "editable_wheel"} & set(sys.argv[1:]):
        return
    try:
        from setuptools.command.bdist_wheel import bdist_wheel  # noqa: F401  (>= 70.1)
        return
    except ImportError:
        pass
    try:
        import wheel  # noqa: F401
    except ImportError:
        import setuptools

        raise SystemExit(
            f"ferry: this environment's setuptools {setuptools.__version__} cannot build a "
            "wheel (it has no bdist_wheel command and the `wheel` package is not installed), "
            "and --no-build-isolation installs no build requirements. Upgrade it, then run "
            "the same command again:\n    python -m pip install 'setuptools>=70.1'"
        ) from None


check_wheel_command()

try:
    import torch
    from torch.utils.cpp_extension import (
        CUDA_HOME,
        BuildExtension,
        CppExtension,
        CUDAExtension,
    )
except ImportError as exc:  # pragma: no cover - depends on how the build was started
    raise SystemExit(
        "ferry builds against the installed torch, and none was found "
        f"({exc}). Install torch first, then build without isolation: "
        "`pip install --no-build-isolation .` (or `make build`)."
    ) from exc

HERE = os.path.dirname(os.path.abspath(__file__))


def sources(parts: tuple[str, ...] = ("core", "torch", "bindings"), ext: str = "cpp") -> list[str]:
    found: list[str] = []
    for part in parts:
        found += glob.glob(os.path.join("csrc", part, f"*.{ext}"), root_dir=HERE)
    return sorted(found)


def cuda_kernels_wanted() -> bool:
    flag = os.environ.get("FERRY_CUDA_KERNELS", "")
    if flag not in ("", "0", "1"):
        raise SystemExit(f"FERRY_CUDA_KERNELS must be 0, 1 or unset, got {flag!r}.")
    if flag == "0":
        return False
    missing = None
    if torch.version.cuda is None:
        missing = f"the installed torch {torch.__version__} was built without CUDA"
    elif CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        missing = f"nvcc was not found (CUDA_HOME={CUDA_HOME}; set it to a CUDA toolkit)"
    if missing is not None and flag == "1":
        raise SystemExit(f"FERRY_CUDA_KERNELS=1, but {missing}.")
    return missing is None


print(
    f"ferry: building against torch {torch.__version__} "
    f"({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU-only build'})",
    file=sys.stderr,
)

# (name, header, library, a function the probe calls)
CODECS = (
    ("JPEG", "jpeglib.h", "jpeg", "jpeg_std_error(0)"),
    ("PNG", "png.h", "png", "png_get_libpng_ver(0)"),
)


def links(header: str, library: str, call: str) -> bool:
    """Whether a program including `header` and calling into `library` compiles and links."""
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    source = f"#include <stdio.h>\n#include <{header}>\nint main(void) {{ {call}; return 0; }}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            done = subprocess.run(
                [*compiler, path, "-o", os.path.join(tmp, "probe"), f"-l{library}"],
                capture_output=True,
            )
        except OSError:
            return False
    return done.returncode == 0


def image_codecs() -> tuple[list[tuple[str, None]], list[str]]:
    macros: list[tuple[str, None]] = []
    libraries: list[str] = []
    for name, header, library, call in CODECS:
        flag = os.environ.get(f"FERRY_WITH_{name}", "")
        if flag not in ("", "0", "1"):
            raise SystemExit(f"FERRY_WITH_{name} must be 0, 1 or unset, got {flag!r}.")
        if flag == "0":
            continue
        if links(header, library, call):
            macros.append((f"FERRY_WITH_{name}", None))
            libraries.append(library)
        elif flag == "1":
            raise SystemExit(
                f"FERRY_WITH_{name}=1, but no {header} with -l{library} was found "
                f"(Debian: apt-get install lib{library}-dev)."
            )
        else:
            print(f"ferry: {header}/-l{library} not found; {name} images will be decoded by PIL")
    return macros, libraries


# -ffp-contract=off: the image tensor stage must round each float operation as torch does.
cxx_flags = ["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
if os.environ.get("FERRY_DEBUG"):
    cxx_flags = ["-O0", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter"]
cxx_flags.append("-ffp-contract=off")
codec_macros, codec_libraries = image_codecs()

if cuda_kernels_wanted():
    extension = CUDAExtension(
        "ferry._C",
        sources() + sources(("cuda",), "cu"),
        define_macros=[("FERRY_WITH_CUDA_KERNELS", None), *codec_macros],
        libraries=codec_libraries,
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
    )
else:
    extension = CppExtension(
        "ferry._C",
        sources(),
        define_macros=codec_macros,
        libraries=codec_libraries,
        extra_compile_args={"cxx": cxx_flags},
    )

setup(
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
