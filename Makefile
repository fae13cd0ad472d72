# Two commands set everything up on a fresh machine: `make test` and `make bench`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
STAMPS = build/stamps
EXT_SOURCES = setup.py $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu')

.PHONY: all deps build test test-py test-cpp sanitize bench bench-quick gpu-check clean

all: build

deps: $(STAMPS)/deps
$(STAMPS)/deps: requirements-dev.txt
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

# Side by side with torch.utils.data.DataLoader: every workload (python -m ferry.bench).
bench: build
	PYTHONPATH=python $(PYTHON) -m ferry.bench

bench-quick: build
	PYTHONPATH=python $(PYTHON) -m ferry.bench --quick

# On a machine with a CUDA GPU: every test, with the CUDA skips turned into failures, then
# the GPU benchmarks (figures in gpu-bench.json).
gpu-check: build
	FERRY_FAIL_WITHOUT_CUDA=1 $(MAKE) test
	PYTHONPATH=python $(PYTHON) -m ferry.bench --workloads W1,H2D,TRAIN --json gpu-bench.json

clean:
	rm -rf build python/ferry/_C*.so
