"""python -m ferry.bench: its structure and that its ratios are positive numbers (not
their values: speed is for benchmarks, not tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def bench(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    return subprocess.run([sys.executable, "-m", "ferry.bench", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_quick_standard_workloads(tmp_path):
    out = tmp_path / "bench.json"
    run = bench("--quick", "--workloads", "W1,W2", "--json", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "machine" in run.stdout and "torch" in run.stdout
    doc = json.loads(out.read_text())
    assert set(doc["workloads"]) == {"W1", "W2"}
    assert doc["machine"]["torch"] and doc["machine"]["nproc"] >= 1
    for name, workload in doc["workloads"].items():
        loaders = {row["loader"]: row for row in workload["rows"]}
        assert any(k.startswith("ferry") for k in loaders) and any(
            k.startswith("torch") for k in loaders), name
        for row in loaders.values():
            assert row["samples_per_s_median"] > 0
            assert row["ratio_vs_best_torch"] > 0


def test_user_dataset(tmp_path):
    out = tmp_path / "bench.json"
    run = bench("--dataset", "benchdata:make", "--batch-size", "16", "--repeats", "1",
                "--json", str(out), cwd=os.path.dirname(__file__))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["workloads"]["dataset"]["rows"]
    assert [r["loader"] for r in rows] == ["torch nw=0", "torch nw=2", "ferry nw=2"]
    assert all(r["ratio_vs_best_torch"] > 0 for r in rows)


def test_bad_arguments_say_what_is_wrong():
    run = bench("--workloads", "W9")
    assert run.returncode != 0 and "unknown workloads" in run.stderr
    run = bench("--dataset", "no_colon_here")
    assert run.returncode != 0 and "module:factory" in run.stderr


def test_plot_without_matplotlib_is_a_clear_error(tmp_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        run = bench("--workloads", "W1", "--quick", "--plot", str(tmp_path / "p.png"))
        assert run.returncode != 0 and "needs matplotlib" in run.stderr
    else:
        pytest.skip("matplotlib is installed")
