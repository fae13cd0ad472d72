#!/usr/bin/env python3
"""W1 (in-memory tensors) and W3 (on-disk memmap): ferry's native gather against torch's
DataLoader. The workloads live in ferry.bench.native (also run by `python -m ferry.bench`,
whose options this takes).

    PYTHONPATH=python python3 benchmarks/bench_native.py [--quick] [--json PATH] [--repeats R]
"""

import sys

from ferry.bench import native
from ferry.bench.common import main

if __name__ == "__main__":
    sys.exit(main(native.WORKLOADS))
