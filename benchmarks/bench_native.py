#!/usr/bin/env python3
"""W1 (in-memory tensors) and W3 (on-disk memmap): ferry's native gather against torch's
DataLoader. The workloads live in ferry.bench.native (also run by `python -m ferry.bench`).

    PYTHONPATH=python python3 benchmarks/bench_native.py [--quick] [--json PATH] [--repeats R]
"""

import sys

from ferry.bench import native

if __name__ == "__main__":
    sys.exit(native.main())
