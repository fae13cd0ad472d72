"""The examples run, and the CPU one actually learns."""

from __future__ import annotations

import os
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
sys.path.insert(0, EXAMPLES)

import train_cpu  # noqa: E402


def test_cpu_training_loop_learns():
    first = train_cpu.main(epochs=1)
    assert first == first  # not NaN
    assert train_cpu.main(epochs=4) < 0.3  # the rule is learnable: loss falls from ~0.69


@pytest.mark.needs_cuda
def test_gpu_training_loop():
    assert train_cpu.main(epochs=2, device="cuda") < 0.69
