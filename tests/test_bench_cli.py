"""python -m ferry.bench: its structure and that its ratios are positive numbers (not
their values: speed is for benchmarks, not tests)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import nullcontext

import pytest
import torch

import ferry
from benchdata import Squares
from ferry.bench import gpu
from ferry.bench.common import Progress, parse_args, settings_from, user_loaders

ROOT = os.path.join(os.path.dirname(__file__), "..")


def bench(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    # the GPU workloads run on the CPU only where a test passes --gpu-workloads-on-cpu
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "python"), gpu.ON_CPU_ENV: "0"}
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
    # stderr is not a terminal here: no '\r' redraws, one final progress line per workload
    assert "\r" not in run.stderr
    assert [line.split()[:2] for line in run.stderr.splitlines() if " passes in " in line] == [
        ["W1", "done:"], ["W2", "done:"]]


def test_image_workloads(tmp_path):
    out = tmp_path / "bench.json"
    run = bench("--workloads", "W4,W5", "--images", "128", "--repeats", "1",
                "--json", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    workloads = json.loads(out.read_text())["workloads"]
    if ferry.backend_info()["image_codecs"].keys() < {"jpeg", "png"}:
        assert all(w["skipped"] for w in workloads.values())
        return
    for name, workload in workloads.items():
        assert "128 files" in workload["title"], workload["title"]
        rows = {row["loader"]: row for row in workload["rows"]}
        assert {"torch nw=0", "torch nw=1", "torch nw=2", "ferry nw=2"} <= rows.keys(), name
        for row in rows.values():
            assert row["samples_per_s_median"] > 0 and row["samples_per_cpu_s"] > 0
            if row["kind"] == "ferry":
                assert row["paths"] == ["images"], (name, row)
        assert all(f["vs_best_torch"] > 0 for f in workload["summary"].values()), name
    assert "ferry nw=2, decode='fast'" in {r["loader"] for r in workloads["W4"]["rows"]}


def test_user_dataset(tmp_path):
    out = tmp_path / "bench.json"
    run = bench("--dataset", "benchdata:make", "--batch-size", "16", "--repeats", "1",
                "--json", str(out), cwd=os.path.dirname(__file__))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["workloads"]["dataset"]["rows"]
    assert [r["loader"] for r in rows] == ["torch nw=0", "torch nw=2", "ferry nw=2"]
    assert all(r["ratio_vs_best_torch"] > 0 for r in rows)


def test_gpu_workloads_on_cpu(tmp_path):
    """--gpu-workloads-on-cpu runs H2D and TRAIN's code with device="cpu" and tiny sizes."""
    out = tmp_path / "bench.json"
    run = bench("--workloads", "H2D,TRAIN", "--gpu-workloads-on-cpu", "--json", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "CPU STAND-IN" in run.stdout
    workloads = json.loads(out.read_text())["workloads"]
    assert set(workloads) == {"H2D", "TRAIN"}
    for name, workload in workloads.items():
        assert workload["stand_in"] is True and workload["device"] == "cpu", name
        assert "skipped" not in workload, name
        kinds = {row["kind"] for row in workload["rows"]}
        assert {"ferry", "torch"} <= kinds, name
        for row in workload["rows"]:
            assert row["samples_per_s_median"] > 0 and row["ratio_vs_best_torch"] > 0
            assert all(r["samples"] > 0 and r["seconds"] > 0 for r in row["runs"])
    h2d = workloads["H2D"]
    assert any(row["kind"] == "ceiling" for row in h2d["rows"])
    assert all(row["pct_of_ceiling"] > 0 for row in h2d["rows"])
    (ferry_h2d,) = [v for k, v in h2d["summary"].items() if k.startswith("ferry")]
    assert ferry_h2d["pct_of_ceiling"] > 0 and ferry_h2d["goal_pct_ceiling_met"] is None
    for row in workloads["TRAIN"]["rows"]:
        assert row["step_ms_median"] > 0 and 0 <= row["stall_pct_median"] <= 100
        assert all(r["steps"] > 0 and r["wait_s"] >= 0 for r in row["runs"])
    (ferry_train,) = [v for k, v in workloads["TRAIN"]["summary"].items()
                      if k.startswith("ferry")]
    assert ferry_train["vs_torch"] > 0 and ferry_train["step_ms"] > 0
    assert ferry_train["goal_stall_met"] is None  # goals are not judged on the stand-in


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: they would run")
def test_gpu_workloads_skipped_without_cuda(tmp_path):
    out = tmp_path / "bench.json"
    run = bench("--workloads", "H2D,TRAIN", "--json", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("skipped: no CUDA device") == 2
    workloads = json.loads(out.read_text())["workloads"]
    assert set(workloads) == {"H2D", "TRAIN"}
    for workload in workloads.values():
        assert workload["skipped"].startswith("no CUDA device") and workload["rows"] == []


def gpu_settings(*argv: str):
    return settings_from(parse_args(argv, gpu.WORKLOADS), gpu.WORKLOADS)


def test_gpu_on_cpu_environment_variable(monkeypatch):
    monkeypatch.setenv(gpu.ON_CPU_ENV, "1")
    settings = gpu_settings("--workloads", "train")
    assert gpu.stand_in(settings) and [w.name for w in settings.workloads] == ["TRAIN"]
    monkeypatch.setenv(gpu.ON_CPU_ENV, "0")
    assert not gpu.stand_in(gpu_settings())
    assert gpu.stand_in(gpu_settings("--gpu-workloads-on-cpu"))


def test_help_shows_the_whole_description_and_every_workload():
    run = bench("--help")
    assert run.returncode == 0, run.stderr[-3000:]
    from ferry import bench as package

    text = " ".join(run.stdout.split())
    assert " ".join(package.__doc__.split()) in text  # not cut mid-sentence
    for name in ("W1", "W3", "W2", "W2-dict", "TTFB", "HELD", "H2D", "TRAIN"):
        assert f"\n  {name} " in run.stdout, name
    for option in ("--pin-memory", "--seed", "--nofile", "--gpu-workloads-on-cpu"):
        assert option in run.stdout, option


@pytest.mark.parametrize("workers", [0, 2])
def test_dataset_loaders_pin_memory_and_shuffle_alike(workers):
    """--dataset's loaders all get --pin-memory and an equal generator seeded with --seed:
    each yields the order of torch's loader shuffling with that seed."""
    args = parse_args(["--dataset", "benchdata:make", "--pin-memory", "--seed", "7",
                       "--num-workers", str(workers), "--batch-size", "32"], ())
    dataset = Squares()
    makers = user_loaders(dataset, settings_from(args, ()))
    expected_names = ["torch nw=0", "ferry nw=0"] if workers == 0 else [
        "torch nw=0", f"torch nw={workers}", f"ferry nw={workers}"]
    assert list(makers) == expected_names
    reference = torch.utils.data.DataLoader(
        dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(7))
    order = [int(i) for _, labels in reference for i in labels]
    for name, make in makers.items():
        loader = make()
        assert loader.pin_memory and loader.batch_size == 32, name
        no_pinning = not torch.cuda.is_available()  # torch and ferry warn alike
        with pytest.warns(UserWarning, match="pin_memory") if no_pinning else nullcontext():
            assert [int(i) for _, labels in loader for i in labels] == order, name


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line_at_most_every_interval():
    stream = FakeTerminal()
    with Progress("W1", 4, stream=stream, tty_interval_s=3600) as progress:
        for k in range(4):
            progress.step(f"ferry nw=2, run {k + 1}/4")
    text = stream.getvalue()
    # the first step is drawn at once, the others fall inside the interval; then the end
    assert text.count("\r") == 2 and text.count("\n") == 1 and text.endswith("\n")
    assert "W1" in text and "1/4 ferry nw=2, run 1/4" in text
    assert "done: 4 passes" in text


def test_progress_in_a_log_writes_plain_lines():
    stream = io.StringIO()
    with Progress("W2", stream=stream, log_interval_s=0) as progress:
        progress.add(2)
        progress.step("torch nw=0, warm-up")
        progress.step("ferry nw=2, warm-up")
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert "1/2 torch nw=0, warm-up" in lines[0] and "2/2 ferry nw=2, warm-up" in lines[1]
    assert lines[2].split()[:4] == ["W2", "done:", "2", "passes"]


def test_progress_says_where_it_stopped():
    stream = io.StringIO()
    with pytest.raises(KeyError), Progress("W3", 5, stream=stream) as progress:
        progress.step("torch nw=2, run 1/1")
        raise KeyError("boom")
    assert "stopped in pass 1/5 (torch nw=2, run 1/1)" in stream.getvalue()


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


def test_plot_draws_the_rows_side_by_side(tmp_path):
    # `make bench` draws its figures with --plot (matplotlib is a dev requirement)
    pytest.importorskip("matplotlib")
    png, doc = tmp_path / "p.png", tmp_path / "b.json"
    run = bench("--workloads", "W1", "--quick", "--repeats", "1", "--plot", str(png),
                "--json", str(doc))
    assert run.returncode == 0, run.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = json.loads(doc.read_text())["workloads"]["W1"]["rows"]
    assert {r["kind"] for r in rows} >= {"torch", "ferry"}


def test_hot_loop_breakdown_runs():
    """benchmarks/hot_loop.py reaches into the native producer: it must keep working."""
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "python")}
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "hot_loop.py"),
                          "--epochs", "1", "--samples", "3000"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {line.split("  ")[0]: line.split()[-4:] for line in run.stdout.splitlines()
            if line.startswith(("next()", "sampler", "C++", "Python"))}
    assert set(rows) == {"next(), whole", "sampler draw", "C++ submit",
                         "C++ next (wait + wrap)", "Python (ferry + torch)", "C++ gather (threads)"}
    whole = [float(v) for v in rows["next(), whole"]]
    assert all(v > 0 for v in whole)
