# Two commands for a fresh machine (see README):
#   make quickstart   set up, build, and train the quickstart config on the built-in dataset
#   make test         set up, build, and run the whole test suite
# Other targets: make setup | pretrained | test-fast | bench | clean
#   make pretrained   the pretrained-regime CE run (ImageNet EfficientNet-Lite0, 128 px, ~16 min on 2 cores)
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
CONFIG ?= configs/pico/quickstart.yaml
BUILD_INPUTS := $(shell find csrc -type f) setup.py pyproject.toml

.PHONY: setup quickstart pretrained test test-fast bench clean

.venv/.deps: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q ninja pybind11 setuptools wheel
	touch $@

.venv/.built: .venv/.deps $(BUILD_INPUTS)
	$(PIP) install -q --no-build-isolation -e ".[all]" $(TORCH_PINS)
	$(PY) -c "import segproto.ops as o; i = o.build_info(); print('segproto ops:', i); assert i['extension'], i['error']"
	touch $@

setup: .venv/.built

quickstart: .venv/.built
	$(PY) -m segproto.train $(CONFIG) --work-dir work_dirs/quickstart

pretrained: .venv/.built
	$(PY) -m segproto.train configs/pretrained128/ce.yaml --work-dir work_dirs/pretrained128/ce

test: .venv/.built
	SEGPROTO_REQUIRE_EXT=1 $(PY) -m pytest -q

test-fast: .venv/.built
	SEGPROTO_REQUIRE_EXT=1 $(PY) -m pytest -q -m "not slow"

bench: .venv/.built
	$(PY) -m benchmarks.ops

clean:
	rm -rf build .venv/.built segproto/_C*.so segproto/_build_info.json
