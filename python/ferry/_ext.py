"""Loads ferry's C++ extension at first use, with an error that says how to fix it.

Importing ferry never fails because of the extension; using it does, loudly: a broken
build must not hide behind a silent fallback.
"""

from __future__ import annotations

from types import ModuleType

import torch

_module: ModuleType | None = None

REBUILD_HINT = (
    "Rebuild it against the installed torch: `make build` in a source checkout, or "
    "`pip install --no-build-isolation --force-reinstall --no-deps <ferry source>`."
)


def load() -> ModuleType:
    """The extension module ``ferry._C``; raises ImportError naming the cause."""
    global _module
    if _module is None:
        try:
            from . import _C  # type: ignore[attr-defined]
        except ImportError as exc:
            raise ImportError(
                f"ferry's C++ extension (ferry._C) could not be loaded: {exc}. {REBUILD_HINT}"
            ) from exc
        built = _C.build_info()["torch_version"]
        running = torch.__version__.split("+")[0]
        if built.split(".")[:2] != running.split(".")[:2]:
            raise ImportError(
                f"ferry._C was built against torch {built} but torch {torch.__version__} "
                f"is running. {REBUILD_HINT}"
            )
        _module = _C
    return _module
