# The two commands of the README: `make run` (service on embedded defaults) and `make test` (whole suite).
# Both create .venv and install the project into it first, so a fresh machine needs only python3 and make.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: run demo test lint bench install

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,databricks,spark,datahub]'
	@# Spark (the spark extra's tests) needs a Java runtime: Debian's default one (OpenJDK 17 or 21).
	command -v java >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends default-jre-headless; }
	@# The status page's browser tests (tests/web/test_status_page.py) run Debian's chromium headless.
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }
	touch $@

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
	@# The configuration reference in the README is generated from provisioner/settings (--write regenerates it).
	$(BIN)/python -m provisioner.settings --check README.md

# Coverage: lines of provisioner/ run by the suite in its own process (code run only in the subprocesses some tests
# start, such as `provisioner serve`, is not counted); files at 100% are left out of the table. No threshold.
test: lint
	$(BIN)/pytest -q --cov=provisioner --cov-report=term:skip-covered

bench: $(VENV)/.installed
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/provision.py
	$(BIN)/python bench/tokenization.py
