#!/usr/bin/env python3
"""The GPU check: on a machine with a CUDA GPU, as it is, verify ferry's CUDA paths and
record the figures, in one command and one results file.

    make gpu-check [GPU_CHECK_OUT=DIR] [DRY_RUN=1]
    python3 benchmarks/gpu_check.py --out DIR [--dry-run] [--full-bench]

Steps, each with a time limit, and all within --budget-s (570 s: the check ends within
10 minutes, the longest command a lent GPU machine runs):
  deps    `make deps`: an installed torch >= the Makefile's TORCH_MIN is kept (the GPU
          machine's own CUDA build); nothing is installed that is already there
  build   the extension with the CUDA kernels (FERRY_CUDA_KERNELS=1), unless the build in
          place already has them
  cpp     the C++ unit tests (ctest)
  tests   every test marked needs_cuda, with FERRY_FAIL_WITHOUT_CUDA=1 (a CUDA skip is a
          failure), reported per test (JUnit XML beside the results)
  bench   the GPU benchmarks (python -m ferry.bench --workloads W1,H2D,TRAIN; --quick
          unless --full-bench)
Everything lands in DIR/gpu-check.json (the environment, each step's command, exit status,
time and output tail, the test outcomes, the benchmark figures). The exit status is 0 only
if every step passed. --dry-run prints the plan and what it would keep or install, on any
machine, and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_WORKLOADS = "W1,H2D,TRAIN"


def torch_facts() -> dict[str, Any]:
    """The installed torch, read in a subprocess (this script must not import CUDA)."""
    code = (
        "import json, torch; print(json.dumps({'version': torch.__version__, "
        "'cuda': torch.version.cuda, 'available': torch.cuda.is_available(), "
        "'devices': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]"
        " if torch.cuda.is_available() else []}))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if run.returncode != 0:
        return {"version": None, "error": run.stderr.strip().splitlines()[-1:]}
    return json.loads(run.stdout)


def torch_min() -> str:
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("TORCH_MIN"):
            return line.split("=", 1)[1].strip()
    raise SystemExit("gpu_check: the Makefile sets no TORCH_MIN")


def torch_is_kept(version: str | None) -> bool:
    if version is None:
        return False
    have = tuple(int(x) for x in version.split("+")[0].split(".")[:2])
    return have >= tuple(int(x) for x in torch_min().split("."))


def built_with_kernels() -> bool:
    code = "import ferry; print(ferry.backend_info()['built_with_cuda_kernels'])"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=ROOT)
    return run.returncode == 0 and run.stdout.strip() == "True"


def plan(out: Path, full_bench: bool) -> list[dict[str, Any]]:
    make = os.environ.get("MAKE", "make")
    py = sys.executable
    bench = [py, "-m", "ferry.bench", "--workloads", BENCH_WORKLOADS,
             "--json", str(out / "gpu-bench.json")] + ([] if full_bench else ["--quick"])
    return [
        {"name": "deps", "cmd": [make, "deps", f"PYTHON={py}"], "limit_s": 120},
        # --force: setuptools would call a CPU build up to date (no source is newer)
        {"name": "build", "env": {"FERRY_CUDA_KERNELS": "1"}, "limit_s": 300,
         "cmd": [py, "setup.py", "--quiet", "build_ext", "--inplace", "--force"]},
        {"name": "cpp", "cmd": [make, "test-cpp", f"PYTHON={py}"], "limit_s": 120},
        {"name": "tests", "env": {"FERRY_FAIL_WITHOUT_CUDA": "1"}, "limit_s": 240,
         "cmd": [py, "-m", "pytest", "-m", "needs_cuda", "-q", "-p", "no:cacheprovider",
                 f"--junitxml={out / 'gpu-tests.xml'}"]},
        {"name": "bench", "env": {"PYTHONPATH": str(ROOT / "python")}, "limit_s": 300,
         "cmd": bench},
    ]


def run_step(step: dict[str, Any], deadline: float) -> dict[str, Any]:
    env = dict(os.environ, **step.get("env", {}))
    started = time.perf_counter()
    limit = max(1, min(step["limit_s"], int(deadline - started)))
    print(f"== {step['name']}: {' '.join(step['cmd'])}", flush=True)
    try:
        run = subprocess.run(step["cmd"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=limit)
        rc, output = run.returncode, run.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        rc = 124
        output = (out.decode(errors="replace") if isinstance(out, bytes) else out) + (
            f"\n[gpu_check: stopped after its limit of {limit} s]")
    print(output[-4000:], flush=True)
    return {"name": step["name"], "cmd": step["cmd"], "env": step.get("env", {}),
            "rc": rc, "seconds": round(time.perf_counter() - started, 1),
            "output_tail": output[-6000:]}


def junit_outcomes(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"error": f"{path.name} was not written"}
    outcomes: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "failures": []}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            outcomes["failed"] += 1
            outcomes["failures"].append({"test": name, "message": problem.get("message", "")})
        elif case.find("skipped") is not None:
            outcomes["skipped"] += 1
        else:
            outcomes["passed"] += 1
    return outcomes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-check",
                   help="where gpu-check.json (and the test and bench files) go")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--full-bench", action="store_true",
                   help="the benchmarks at full size (longer) instead of --quick")
    p.add_argument("--budget-s", type=float, default=570,
                   help="every step together ends within this (default 570)")
    args = p.parse_args(argv)
    deadline = time.perf_counter() + args.budget_s
    out = args.out.resolve()
    facts = torch_facts()
    steps = plan(out, args.full_bench)
    kept = torch_is_kept(facts.get("version"))
    if kept:
        torch_line = f"keep the installed torch {facts['version']} (CUDA {facts.get('cuda')})"
    else:
        torch_line = (f"install requirements-torch.txt (no torch >= {torch_min()} is "
                      f"installed: {facts.get('version')})")
    if args.dry_run:
        print(f"gpu_check (dry run): results would go to {out / 'gpu-check.json'}")
        print(f"torch: {torch_line}")
        devices = ", ".join(facts.get("devices", []))
        print(f"CUDA now: {devices if facts.get('available') else 'none (a real run stops here)'}")
        if shutil.which("nvcc") is None and not os.environ.get("CUDA_HOME"):
            print("nvcc: not found (the build step would fail: FERRY_CUDA_KERNELS=1)")
        for step in steps:
            env = " ".join(f"{k}={v}" for k, v in step.get("env", {}).items())
            print(f"  {step['name']:6s} (limit {step['limit_s']:3d} s): {env + ' ' if env else ''}"
                  f"{' '.join(step['cmd'])}")
        return 0
    if not facts.get("available"):
        print("gpu_check: no CUDA device is visible to torch "
              f"{facts.get('version')} (CUDA {facts.get('cuda')}): there is nothing to check "
              "here. `make gpu-check DRY_RUN=1` shows what it would do.", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                           "torch": facts, "torch_decision": torch_line,
                           "python": sys.version.split()[0], "steps": []}
    nvsmi = shutil.which("nvidia-smi")
    if nvsmi:
        doc["nvidia_smi"] = subprocess.run([nvsmi, "-L"], capture_output=True, text=True).stdout
    for step in steps:
        if step["name"] == "build" and built_with_kernels():
            doc["steps"].append({"name": "build", "rc": 0, "seconds": 0.0,
                                 "output_tail": "already built with the CUDA kernels"})
            continue
        result = run_step(step, deadline)
        doc["steps"].append(result)
        if step["name"] in ("deps", "build") and result["rc"] != 0:
            break  # nothing after it can run
    doc["tests"] = junit_outcomes(out / "gpu-tests.xml")
    bench = out / "gpu-bench.json"
    doc["bench"] = json.loads(bench.read_text()) if bench.exists() else None
    ok = all(s["rc"] == 0 for s in doc["steps"]) and len(doc["steps"]) == len(steps)
    doc["ok"] = ok
    (out / "gpu-check.json").write_text(json.dumps(doc, indent=2, default=str))
    print(f"gpu_check: {'every step passed' if ok else 'FAILED'}; tests {doc['tests']}; "
          f"results in {out / 'gpu-check.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
