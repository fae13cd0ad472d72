"""What every benchmark prints beside its figures: the machine and the versions."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ferry


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = float("nan")
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024**2
    return {
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_gb, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_sharing_strategy": torch.multiprocessing.get_sharing_strategy(),
        "numpy": np.__version__,
        "ferry": ferry.__version__,
        "ferry_backend": ferry.backend_info(),
        "nofile_limits": resource.getrlimit(resource.RLIMIT_NOFILE),
        "loadavg_start": os.getloadavg(),
    }


def loadavg(avg: Sequence[float]) -> str:
    return " ".join(f"{a:.2f}" for a in avg)
