#!/usr/bin/env python3
"""W2, W2-dict, time to first batch and held batches: ferry's worker processes against
torch's DataLoader. The workloads live in ferry.bench.workers (also run by
`python -m ferry.bench`, whose options this takes).

    PYTHONPATH=python python3 benchmarks/bench_workers.py [--quick] [--json PATH]
"""

import sys

from ferry.bench import workers
from ferry.bench.common import main

if __name__ == "__main__":
    sys.exit(main(workers.WORKLOADS))
