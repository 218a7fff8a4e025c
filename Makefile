# Two commands on a fresh machine with Python 3.11+: `make serve` and `make test`.
# Each creates the virtual environment it needs on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test test-slow lint bench fixtures clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The main job: the service on its embedded default (SQLite and a filesystem broker under
# ./descent-data, migrations applied, the API on 127.0.0.1:8000, one worker process).
serve: $(STAMP)
	$(VENV)/bin/descent serve

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

# The slow tier that .ci/run runs after `make test`; no tests in it is not a failure.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

bench: $(STAMP)
	$(PY) benchmarks/ops.py

# Needs PyTorch: pip install torch==2.13.0 into $(PY)'s environment or another one.
fixtures:
	$(PY) tests/make_fixtures.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
