# Two commands do all set-up on a fresh machine with python3 and make:
#   make demo   gateway + provider simulators on SQLite
#   make test   the whole suite (SQLite; PostgreSQL too when WARTA_TEST_POSTGRES_URL is set)
PYTHON ?= python3
# Test processes (pytest-xdist). Two keep a two-core machine busy: many tests wait on
# subprocesses, simulators and timers; worksteal evens out the few minute-long tests.
# TEST_JOBS=0 runs in this process (for pdb).
TEST_JOBS ?= 2
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/warta demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/pytest -n $(TEST_JOBS) --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) warta-demo .pytest_cache .mypy_cache .ruff_cache
