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

# The fast tier: every test but notebook executions, training runs, the built book's checks and other slow ones
# (markers in pyproject.toml, added by rule in tests/conftest.py), with a tighter per-test timeout than the suite's.
FAST_TESTS := not notebook and not training and not book and not slow
FAST_TIMEOUT ?= 30
LINTED := normlib tests benchmarks tools book/_ext

.PHONY: env data book browser-test test test-fast lint format bench claims clean constraints help

help:
	@echo "make book        - create the environment and build the book into _build/html"
	@echo "make browser-test - open every built page in headless Chromium: console errors, formulas, images, links, search"
	@echo "make test        - create the environment and run the whole test suite (notebooks and training included)"
	@echo "make test-fast   - the unit tests only: no notebook runs, no training, no book checks (about a minute)"
	@echo "make lint        - ruff check and ruff format --check on normlib, tests and benchmarks"
	@echo "make format      - apply ruff's fixes and formatting to normlib, tests and benchmarks"
	@echo "make data        - get Fashion-MNIST (Debian package or checksum-verified download)"
	@echo "make claims      - the gate: every claim at the book's defaults and seeds 0-2 against its expected verdict"
	@echo "make bench       - run the benchmarks in benchmarks/"
	@echo "make constraints - re-pin constraints.txt after a change to pyproject.toml's dependencies"
	@echo "make clean       - remove _build, runs/ and the environment"

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

# jupyter-cache (execute_notebooks: cache) re-executes a notebook whose code changed, but cannot see what the notebooks
# import. tools/book_inputs.py hashes that (normlib, reference/, config, installed packages, data): when it changed,
# or no build succeeded since, the build starts from an empty _build, so a page is never stale; when nothing changed,
# the warm build re-executes nothing.
book: env data
	$(BIN)/python tools/book_inputs.py check
	$(BIN)/python -m normlib compute
	$(BIN)/jupyter-book build . -W --keep-going
	$(BIN)/python tools/book_inputs.py record

# After `make book`: every page of _build/html in headless Chromium (Selenium and chromedriver), one line per page,
# screenshots in _build/screenshots (tools/browser_test.py says what it checks). Installs Debian's chromium and
# chromium-driver when they are missing and apt works as root.
browser-test: env
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "browser-test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)"; exit 2; \
	  fi; \
	fi
	$(BIN)/python tools/browser_test.py

# One pytest-xdist worker per core (each test module runs single-threaded, tests/conftest.py), a file per worker
# at a time, so a module's fixtures run once.
test: env
	$(BIN)/python -m pytest -n auto --dist loadfile

test-fast: env
	$(BIN)/python -m pytest -m "$(FAST_TESTS)" --timeout=$(FAST_TIMEOUT)

# Both checks run and report; the target fails if either finds something.
lint: env
	$(BIN)/ruff check $(LINTED); status=$$?; $(BIN)/ruff format --check $(LINTED) && exit $$status

format: env
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

# The gate: exits 1 when any verdict at seeds 0, 1 and 2 differs from the one the book expects, or when any row
# would pass under its alternative. After `make book` every result comes from the cache.
claims: env data
	$(BIN)/python -m normlib claims --falsify

bench: env
	$(BIN)/python benchmarks/run_all.py

# Re-pin after changing pyproject.toml: pip resolves the project with every extra as if nothing were installed,
# under the current pins (--dry-run installs nothing and reads only the packages' metadata, which PyPI serves apart
# from the wheels, so no torch wheel is downloaded). Every existing pin stays, a new package is pinned at its newest version, and a package that nothing needs
# any more is dropped; delete a line first to move that package. The header comment lines are kept.
define PINS_FROM_REPORT
import json, sys
report = json.load(open(sys.argv[1]))
pins = {(i["metadata"]["name"], i["metadata"]["version"].split("+")[0]) for i in report["install"]}
for name, version in sorted(pins, key=lambda pin: pin[0].lower()):
    if name != "normlib":
        print(f"{name}=={version}")
endef
export PINS_FROM_REPORT

constraints: env
	$(BIN)/python -m pip install --quiet --dry-run --ignore-installed --report $(VENV)/pin-report.json ".[book,test,cluster]"
	{ grep '^#' constraints.txt; $(BIN)/python -c "$$PINS_FROM_REPORT" $(VENV)/pin-report.json; } > $(VENV)/constraints.new
	if cmp -s $(VENV)/constraints.new constraints.txt; then rm $(VENV)/constraints.new; \
	else mv $(VENV)/constraints.new constraints.txt; fi

clean:
	rm -rf _build runs $(VENV)
