# Two commands do all set-up on a fresh machine (see README):
#   make demo   - install what is needed, build, run the S2 attention demonstration on the best backend
#   make test   - install what is needed, build, run every test (C++ under CTest, ASan+UBSan, Python)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
JOBS   ?= 2
BUILD  ?= build

.PHONY: demo test install venv cutlass peers cpp-test cpp-asan-test cpp-example py-test bench-cpu clean

$(VENV)/.stamp: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.stamp

# PyTorch (CPU use of the pinned wheel) for the s2attn.torch tests; about a minute and 4.6 GB.
$(VENV)/.torch-stamp: requirements-torch.txt | venv
	$(PY) -m pip install -q -r requirements-torch.txt
	touch $@

# The Python package builds its CUDA backends only where a GPU driver answers; CPU-only machines skip nvcc.
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo ON || echo OFF)
HAVE_NVCC := $(shell command -v nvcc >/dev/null 2>&1 && echo ON || echo OFF)

# CUTLASS/CuTe headers of the Hopper path, from the pinned nvidia-cutlass wheel (headers only, no deps).
CUTLASS_VERSION := 4.2.0.0
CUTLASS_STAMP   := .deps/cutlass/.stamp-$(CUTLASS_VERSION)
$(CUTLASS_STAMP): | venv
	rm -rf .deps/cutlass
	$(PY) -m pip install -q --no-deps --target .deps/cutlass nvidia-cutlass==$(CUTLASS_VERSION)
	touch $@
cutlass: $(CUTLASS_STAMP)
# The paper's Triton library (dkernel), a benchmark peer that is not on PyPI: a pinned checkout in
# .deps/peers/dkernel (git-ignored; tools/gpu-check puts it on PYTHONPATH; carried with .deps to the GPU).
DKERNEL_COMMIT := 0d4e90e4ead038c8a0f318b9260522f0ca51f554
peers:
	rm -rf .deps/peers/dkernel .deps/peers/dkernel.git
	git clone -q https://github.com/linxihui/dkernel .deps/peers/dkernel.git
	git -C .deps/peers/dkernel.git archive $(DKERNEL_COMMIT) dkernel pyproject.toml LICENSE | 	  (mkdir -p .deps/peers/dkernel && tar -x -C .deps/peers/dkernel)
	rm -rf .deps/peers/dkernel.git
	# dkernel reads its own version from package metadata at import: a dist-info beside the package gives it that
	mkdir -p .deps/peers/dkernel/dkernel-0.0.2.dist-info && printf 'Metadata-Version: 2.1\nName: dkernel\nVersion: 0.0.2\n' \
	  > .deps/peers/dkernel/dkernel-0.0.2.dist-info/METADATA
CUDA_DEPS := $(if $(filter ON,$(HAVE_NVCC)),cutlass,)

install: venv $(if $(filter ON,$(HAVE_GPU)),cutlass,)
	CMAKE_ARGS="-DS2ATTN_CUDA=$(if $(filter ON,$(HAVE_GPU)),AUTO,OFF) $(CMAKE_ARGS)" \
	  $(PY) -m pip install -q --no-build-isolation --no-deps .

# On a GPU machine the demo runs on the GPU through torch tensors, so torch is installed there too.
demo: install $(if $(filter ON,$(HAVE_GPU)),$(VENV)/.torch-stamp,)
	$(PY) -m s2attn demo

test: cpp-test cpp-asan-test cpp-example py-test

# Compiles the CUDA backends too where nvcc is present (a compile check on CPU-only machines).
cpp-test: $(CUDA_DEPS)
	cmake -S . -B $(BUILD)/cpp -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build $(BUILD)/cpp -j $(JOBS)
	ctest --test-dir $(BUILD)/cpp --output-on-failure

cpp-asan-test:
	cmake -S . -B $(BUILD)/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DS2ATTN_SANITIZE=ON -DS2ATTN_CPU_NATIVE=OFF -DS2ATTN_CUDA=OFF > /dev/null
	cmake --build $(BUILD)/asan -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(BUILD)/asan --output-on-failure

# The installed C++ package, consumed through find_package(s2attn) by examples/cpp_consumer.
cpp-example:
	cmake -S . -B $(BUILD)/pkg -DCMAKE_BUILD_TYPE=Release -DS2ATTN_BUILD_TESTS=OFF -DS2ATTN_CUDA=OFF -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(BUILD)/prefix > /dev/null
	cmake --build $(BUILD)/pkg -j $(JOBS)
	cmake --install $(BUILD)/pkg > /dev/null
	cmake -S examples/cpp_consumer -B $(BUILD)/consumer -DCMAKE_PREFIX_PATH=$(CURDIR)/$(BUILD)/prefix > /dev/null
	cmake --build $(BUILD)/consumer -j $(JOBS)
	$(BUILD)/consumer/s2attn_example

py-test: install $(VENV)/.torch-stamp
	$(PY) -m pytest tests/python -q

bench-cpu: install
	$(PY) bench/cpu_scaling.py

clean:
	rm -rf $(BUILD)
