# rustbox — run `make demo` for a tour, `make test` for the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-unit test-root bench lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

bench: $(STAMP)
	$(PY) bench/bench_core.py
	$(PY) bench/bench_cost.py

lint: $(STAMP)
	$(VENV)/bin/ruff check rustbox tests examples bench
	$(VENV)/bin/mypy --strict rustbox

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
