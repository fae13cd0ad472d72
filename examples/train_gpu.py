"""The same loop with batches delivered on the GPU (device="cuda"): needs CUDA.

    PYTHONPATH=python python examples/train_gpu.py
"""

from __future__ import annotations

import train_cpu

if __name__ == "__main__":
    train_cpu.main(device="cuda")
