# rustbox — run `make demo` for a tour, `make test` for the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install toolchains demo test test-unit bench lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Judge toolchains a fresh Debian 12 machine lacks (gcc, java, node, python and rustc
# are there): Go from apt, esbuild (TypeScript) from npm. Idempotent.
toolchains:
	@command -v go >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null; }
	@command -v esbuild >/dev/null 2>&1 || npm install -g --silent esbuild@0.24
	@go version && echo "esbuild $$(esbuild --version)"

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP) toolchains
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

bench: $(STAMP) toolchains
	$(PY) bench/bench_core.py
	$(PY) bench/bench_cost.py
	$(PY) bench/bench_judge.py
	$(PY) bench/bench_batch.py
	$(PY) bench/bench_service.py

lint: $(STAMP)
	$(VENV)/bin/ruff check rustbox tests examples bench
	$(VENV)/bin/mypy --strict rustbox

# The documentation site (mkdocs.yml, docs/*.md) into site/; --strict fails on a broken
# link or anchor, so CI checks that the docs build.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache site
