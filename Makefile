# The README's two commands: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: venv test demo lint clean bench bench-race

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -p no:anyio -p no:cacheprovider tests

demo: $(STAMP)
	$(BIN)/python -m geventagent.demo

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The keep-alive race: failed requests per client, side by side (geventagent must lose none).
bench-race: $(BENCH_STAMP)
	mkdir -p bench-results
	$(BIN)/python bench/race.py --json bench-results/race.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

lint: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check ruff
	$(BIN)/ruff check geventagent tests && $(BIN)/ruff format --check geventagent tests
