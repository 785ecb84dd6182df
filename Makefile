# supir-data: every target sets itself up first (`make setup` is idempotent).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
DEMO_ROOT ?= demo
CONFIG ?= supir/configs/tiny.yaml
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup test demo bench lint train

setup: $(VENV)/.installed .cache/decoder-test-images/.complete
	bash scripts/setup_system.sh

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -e '.[test]'
	touch $@

# Pillow's decoder test images for the hostile-input tests (optional: a failed fetch only warns).
.cache/decoder-test-images/.complete: $(VENV)/.installed
	bash scripts/fetch_decoder_test_images.sh $(VENV)

test: setup
	$(PY) -m pytest tests --ignore=tests/benchmarks -q --durations=15

lint: setup
	$(VENV)/bin/ruff check schemas catalogs pipelines supir tests

demo: setup
	bash scripts/demo.sh $(DEMO_ROOT)

bench: setup
	$(PY) -m pytest tests/benchmarks -q -s -p no:cacheprovider

train: setup
	bash scripts/train.sh $(CONFIG)
