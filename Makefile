# Two commands set everything up on a fresh machine: `make test` and `make bench`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
STAMPS = build/stamps
EXT_SOURCES = setup.py $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu')

.PHONY: all deps build test test-py test-cpp sanitize bench bench-quick gpu-check clean

all: build

# An installed torch at least TORCH_MIN is kept, whatever its build (the GPU machine's CUDA
# torch, a user's own): only where there is none, or an older one, the pinned one is
# installed. The extension builds against whichever torch this leaves.
TORCH_MIN = 2.6
deps: $(STAMPS)/deps
$(STAMPS)/deps: requirements-dev.txt requirements-torch.txt
	@if $(PYTHON) -c "import sys, torch; v = torch.__version__.split('+')[0].split('.'); \
	    sys.exit(tuple(map(int, v[:2])) < tuple(map(int, '$(TORCH_MIN)'.split('.'))))" 2>/dev/null; \
	then echo "ferry: keeping the installed torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	else $(PIP) install --quiet --disable-pip-version-check -r requirements-torch.txt; fi
	$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	@mkdir -p $(STAMPS) && touch $@

# The extension builds in place (python/ferry/_C*.so) with ninja, incrementally.
build: $(STAMPS)/ext
$(STAMPS)/ext: $(STAMPS)/deps $(EXT_SOURCES)
	MAX_JOBS=$${MAX_JOBS:-$$(nproc)} $(PYTHON) setup.py --quiet build_ext --inplace
	@mkdir -p $(STAMPS) && touch $@

# The torch-free C++ core's unit tests, through CMake and ctest.
test-cpp: $(STAMPS)/deps
	cmake --preset default >/dev/null
	cmake --build --preset default
	ctest --preset default

# The same C++ tests under AddressSanitizer+UBSan, then ThreadSanitizer.
sanitize: $(STAMPS)/deps
	for p in asan tsan; do \
	  cmake --preset $$p >/dev/null && cmake --build --preset $$p && ctest --preset $$p || exit 1; \
	done

test-py: build
	$(PYTHON) -m pytest

test: test-cpp test-py

# Side by side with torch.utils.data.DataLoader: every workload (python -m ferry.bench),
# the figures in bench_results/bench.json and drawn in bench_results/bench.png.
bench: build
	@mkdir -p bench_results
	PYTHONPATH=python $(PYTHON) -m ferry.bench --json bench_results/bench.json \
	  --plot bench_results/bench.png

bench-quick: build
	PYTHONPATH=python $(PYTHON) -m ferry.bench --quick

# On a machine with a CUDA GPU, as it is (its own torch kept): build with the CUDA kernels,
# every GPU test with the CUDA skips turned into failures, the GPU benchmarks, one results
# file (GPU_CHECK_OUT/gpu-check.json). DRY_RUN=1 shows the steps on any machine.
GPU_CHECK_OUT ?= build/gpu-check
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(if $(DRY_RUN),--dry-run)

clean:
	rm -rf build python/ferry/_C*.so
