# One command sets up and runs the demo; one runs the tests. Both are idempotent.
#   make demo   - venv + install + Fashion-MNIST (Debian) + `edgeprune demo`
#   make test   - the same setup + the test suite (what .ci/run calls)
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test lint bench-export

setup: $(VENV)/.installed $(FMNIST)

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $@

$(FMNIST):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist

demo: setup
	$(VENV)/bin/edgeprune demo --out out/demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check edgeprune tests bench
