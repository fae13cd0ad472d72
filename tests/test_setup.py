"""The set-up where users are: `make deps` keeps a compatible torch, the GPU check's plan,
and the install line in a venv that reuses the system's packages."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fake_torch(tmp_path: Path, version: str, cuda: str | None) -> Path:
    """A directory holding a stand-in `torch` package that reports `version`."""
    pkg = tmp_path / "fake" / "torch"
    (pkg / "version").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        f"__version__ = {version!r}\nfrom . import version, cuda\n")
    (pkg / "version" / "__init__.py").write_text(f"cuda = {cuda!r}\n")
    (pkg / "cuda.py").write_text(
        "def is_available():\n    return False\n\ndef device_count():\n    return 0\n")
    return pkg.parent


def make_deps(tmp_path: Path, torch_dir: Path) -> str:
    """`make deps` with pip replaced by echo: what it would install."""
    run = subprocess.run(
        ["make", "-s", "--no-print-directory", "deps", f"STAMPS={tmp_path / 'stamps'}",
         f"PYTHON={sys.executable}", "PIP=echo PIP"],
        cwd=ROOT, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(torch_dir)),
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_deps_keep_an_installed_torch_of_another_build(tmp_path):
    # the GPU machine's torch: another version and a CUDA build, never reinstalled
    out = make_deps(tmp_path, fake_torch(tmp_path, "2.11.0+cu130", "13.0"))
    assert "keeping the installed torch 2.11.0+cu130" in out
    assert "requirements-torch.txt" not in out
    assert "-r requirements-dev.txt" in out


def test_deps_install_the_pinned_torch_over_an_old_one(tmp_path):
    out = make_deps(tmp_path, fake_torch(tmp_path, "2.1.2", None))
    assert "-r requirements-torch.txt" in out and "keeping" not in out


def test_requirements_never_name_torch_unpinned():
    # a bare or open-ended torch requirement downloads several GB of CUDA packages
    for name in ("requirements-dev.txt", "requirements-torch.txt"):
        for line in (ROOT / name).read_text().splitlines():
            req = line.split("#")[0].strip()
            if req.split("=")[0].split(">")[0].split("<")[0].strip() == "torch":
                assert req.startswith("torch=="), f"{name}: {line}"


def gpu_check(*args: str, torch_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if torch_dir is not None:
        env["PYTHONPATH"] = str(torch_dir)
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


def test_gpu_check_dry_run_shows_every_step_and_keeps_torch(tmp_path):
    out_dir = tmp_path / "out"
    run = gpu_check("--dry-run", "--out", str(out_dir),
                    torch_dir=fake_torch(tmp_path, "2.11.0+cu130", "13.0"))
    assert run.returncode == 0, run.stderr
    assert "keep the installed torch 2.11.0+cu130" in run.stdout
    for step, what in (("deps", "make deps"), ("build", "FERRY_CUDA_KERNELS=1"),
                       ("cpp", "test-cpp"),
                       ("tests", "FERRY_FAIL_WITHOUT_CUDA=1"), ("bench", "H2D,TRAIN")):
        line = next((s for s in run.stdout.splitlines() if s.strip().startswith(step)), "")
        assert what in line, (step, run.stdout)
    assert str(out_dir / "gpu-check.json") in run.stdout
    assert not out_dir.exists()  # a dry run writes nothing


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import torch, sys; "
                    "sys.exit(torch.cuda.is_available())"]).returncode != 0,
    reason="a CUDA device is visible: the real check would run")
def test_gpu_check_without_cuda_says_so_and_writes_nothing(tmp_path):
    run = gpu_check("--out", str(tmp_path / "out"))
    assert run.returncode == 2
    assert "no CUDA device" in run.stderr and "DRY_RUN=1" in run.stderr
    assert not (tmp_path / "out").exists()


def test_install_line_in_a_venv_over_system_packages_says_what_is_missing(tmp_path):
    """`python -m venv --system-site-packages` on Python 3.11 shadows the system's
    setuptools with its own 65, which has no bdist_wheel; pip with --no-build-isolation
    installs no build requirement. The build must say what to install, not fail with
    "invalid command 'bdist_wheel'"."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    probe = subprocess.run(
        [py, "-c", "import setuptools\ntry:\n import setuptools.command.bdist_wheel\n"
         "except ImportError:\n import wheel"], capture_output=True, text=True)
    if probe.returncode == 0:
        pytest.skip("this Python's venv builds wheels as it is: the install line needs nothing")
    run = subprocess.run(
        [py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "invalid command 'bdist_wheel'" not in run.stdout + run.stderr
    assert "python -m pip install 'setuptools>=70.1'" in run.stdout + run.stderr
