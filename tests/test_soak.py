"""A short soak (benchmarks/soak.py with fewer epochs): over many epochs of every path,
RSS, file descriptors, threads, child processes and /dev/shm entries stay flat."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_soak_is_flat(tmp_path):
    out = tmp_path / "soak.json"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "soak.py"), "--epochs", "30",
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert len(results) == 4
    for r in results:
        g = r["growth"]
        assert g["fds"] <= 0 and g["threads"] <= 0 and g["children"] <= 0, r
        assert g["shm"] <= 0, r
        assert g["rss_mib"] < 32, r  # allocator noise is a few MiB; a leak grows per epoch
