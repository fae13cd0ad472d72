"""python -m ferry.bench: every workload of ferry/bench (see its __init__.py), or the
user's own dataset, ferry against torch.utils.data.DataLoader in one run."""

import sys

from . import gpu, images, native, workers
from .common import main

# The order of a run; the CUDA ones last, so that this process initialises CUDA only
# after the other workloads' workers were forked.
WORKLOADS = (*native.WORKLOADS, *workers.WORKLOADS, *images.WORKLOADS, *gpu.WORKLOADS)

if __name__ == "__main__":
    sys.exit(main(WORKLOADS))
