"""python -m ferry.bench: every standard workload, or the user's own dataset, ferry
against torch.utils.data.DataLoader in one run (see ferry/bench/__init__.py)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import ferry

from . import gpu, native, workers
from .common import Progress, loadavg, machine_info

NATIVE = ("W1", "W3")
WORKERS = ("W2", "W2-dict", "TTFB", "HELD")
GPU = gpu.WORKLOADS  # skipped, with the reason, where there is no CUDA device
ALL = NATIVE + WORKERS + GPU


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ferry.bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller workloads (about a minute)")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    p.add_argument("--plot", type=Path, help="draw a bar chart to this PNG (needs matplotlib)")
    p.add_argument("--workloads", default=",".join(ALL),
                   help=f"comma-separated, of {','.join(ALL)}")
    p.add_argument("--dataset", help="module:factory returning your dataset: benchmark it instead")
    p.add_argument("--batch-size", type=int, default=64, help="with --dataset (default 64)")
    p.add_argument("--num-workers", type=int, default=2, help="with --dataset (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="with --dataset: epochs per loader")
    p.add_argument("--gpu-workloads-on-cpu", action="store_true",
                   help=f"run {','.join(GPU)} on the CPU with tiny sizes, to exercise their code "
                   f"(or {gpu.ON_CPU_ENV}=1); their figures then mean nothing")
    return p.parse_args(argv)


def check_plotting(path: Path | None) -> None:
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("--plot needs matplotlib, which is not installed: pip install matplotlib")


def run_standard(args: argparse.Namespace) -> dict[str, Any]:
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(ALL))
    if unknown:
        sys.exit(f"unknown workloads {unknown}; choose from {', '.join(ALL)}")
    doc: dict[str, Any] = {"workloads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        # The GPU workloads last, so that this process initialises CUDA only after the
        # other workloads' workers were forked.
        for module, names in ((native, NATIVE), (workers, WORKERS), (gpu, GPU)):
            chosen = [w for w in wanted if w in names]
            if not chosen:
                continue
            out = Path(tmp) / f"{module.__name__}.json"
            argv = ["--workloads", ",".join(chosen), "--json", str(out)]
            argv += ["--quick"] if args.quick else []
            argv += ["--on-cpu"] if module is gpu and args.gpu_workloads_on_cpu else []
            module.main(argv)
            part = json.loads(out.read_text())
            doc["machine"] = part["machine"]
            doc["workloads"].update(part["workloads"])
    return doc


def load_factory(spec: str) -> Any:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        sys.exit(f"--dataset takes module:factory, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    factory = getattr(importlib.import_module(module_name), attr)
    return factory() if callable(factory) else factory


def run_user_dataset(args: argparse.Namespace) -> dict[str, Any]:
    dataset = load_factory(args.dataset)
    configs = {
        "torch nw=0": (torch.utils.data.DataLoader, 0),
        f"torch nw={args.num_workers}": (torch.utils.data.DataLoader, args.num_workers),
        f"ferry nw={args.num_workers}": (ferry.DataLoader, args.num_workers),
    }
    runs: dict[str, list[float]] = {name: [] for name in configs}
    print(f"dataset {args.dataset}: {len(dataset)} samples, batch_size {args.batch_size}")
    with Progress("dataset", args.repeats * len(configs)) as progress:
        for r in range(args.repeats):  # interleaved, so drift hits every loader alike
            for name, (cls, nw) in configs.items():
                progress.step(f"{name}, run {r + 1}/{args.repeats}")
                loader = cls(dataset, batch_size=args.batch_size, shuffle=True, num_workers=nw)
                start, n = time.perf_counter(), 0
                for _ in loader:
                    n += 1
                runs[name].append(len(dataset) / (time.perf_counter() - start))
    medians = {name: statistics.median(v) for name, v in runs.items()}
    best_torch = max(v for k, v in medians.items() if k.startswith("torch"))
    rows = [{"loader": k, "kind": k.split()[0], "samples_per_s_median": v,
             "ratio_vs_best_torch": v / best_torch} for k, v in medians.items()]
    print(f"{'loader':16s} | {'samples/s':>12s} | vs best torch")
    for row in rows:
        print(f"{row['loader']:16s} | {row['samples_per_s_median']:12,.0f} | "
              f"{row['ratio_vs_best_torch']:.2f}x")
    return {"machine": machine_info(), "workloads": {"dataset": {"title": args.dataset,
                                                                  "rows": rows}}}


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, [r for r in w["rows"] if r.get("samples_per_s_median")])
              for name, w in doc["workloads"].items()]
    panels = [(n, rows) for n, rows in panels if rows]
    if not panels:  # e.g. only workloads that were skipped
        print(f"nothing to plot: no workload ran, {path} not written")
        return
    height = 1.2 + 0.45 * sum(len(r) for _, r in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, height), squeeze=False)
    for ax, (name, rows) in zip(axes[:, 0], panels, strict=True):
        colors = ["tab:orange" if r["kind"] == "ferry" else "tab:blue" if r["kind"] == "torch"
                  else "tab:gray" for r in rows]
        rates = [r["samples_per_s_median"] for r in rows]
        ax.barh([r["loader"] for r in rows], rates, color=colors)
        ax.set_title(name, loc="left", fontsize=10)
        ax.invert_yaxis()
        ax.set_xlabel("samples/s")
    m = doc.get("machine", {})
    fig.suptitle(f"ferry vs torch DataLoader — {m.get('cpu', '?')}, {m.get('nproc', '?')} cpus, "
                 f"torch {m.get('torch', '?')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_plotting(args.plot)
    start = time.perf_counter()
    doc = run_user_dataset(args) if args.dataset else run_standard(args)
    doc["wall_s"] = time.perf_counter() - start
    doc["loadavg_end"] = loadavg(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {args.json}")
    if args.plot:
        plot(doc, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
