# The README's commands. Each target sets up what it needs: a fresh machine with Python 3.11 and pip is enough.
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Every pip call made through this Makefile (and pip's build isolation) obeys the one constraints file.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PATH := $(BIN):$(PATH)
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# One result cache for the book, `normlib claims` and `normlib run`, whatever folder a notebook runs in.
export NORMLIB_CACHE ?= $(CURDIR)/runs/cache

.PHONY: env data book test bench claims clean constraints help

help:
	@echo "make book   - create the environment and build the book into _build/html"
	@echo "make test   - create the environment and run the test suite"
	@echo "make data   - get Fashion-MNIST (Debian package or checksum-verified download)"
	@echo "make claims - evaluate every claim at the book's defaults"
	@echo "make bench  - run the benchmarks in benchmarks/"
	@echo "make clean  - remove _build, runs/ and the environment"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet -e ".[book,test,cluster]"
	@touch $@

env: $(STAMP)

# Fashion-MNIST, the book's dataset: Debian's dataset-fashion-mnist package where apt works as root,
# else the checksum-verified upstream download.
data: env
	@if $(BIN)/python -c "from normlib.data import load_dataset; load_dataset('fashion-mnist', split='test', subset=10)" 2>/dev/null; then \
	  echo "Fashion-MNIST: found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	    || $(BIN)/python -m normlib fetch fashion-mnist; \
	else \
	  $(BIN)/python -m normlib fetch fashion-mnist; \
	fi

# jupyter-cache cannot see changes inside normlib, so the book always re-executes every notebook
# (execute_notebooks: force in _config.yml) and starts from an empty build folder.
book: env data
	rm -rf _build
	$(BIN)/jupyter-book build . -W --keep-going

test: env
	$(BIN)/python -m pytest

claims: env
	$(BIN)/python -m normlib claims

bench: env
	$(BIN)/python benchmarks/run_all.py

# Re-pin after changing pyproject.toml: resolves in a scratch venv and writes constraints.txt.
constraints:
	rm -rf /tmp/normlib-pin && $(PYTHON) -m venv /tmp/normlib-pin
	PIP_CONSTRAINT= /tmp/normlib-pin/bin/python -m pip install --quiet "torch==2.13.0" -e ".[book,test,cluster]"
	{ echo "# Exact pins for every install (make env, CI, Binder). Regenerate with: make constraints"; \
	  echo "# torch is the CPU build on PyPI's index name; the local '+cpu' label is matched by '==2.13.0'."; \
	  /tmp/normlib-pin/bin/python -m pip freeze --exclude-editable | sed -e 's/+cpu$$//'; } > constraints.txt

clean:
	rm -rf _build runs $(VENV)
