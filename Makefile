# Two commands: `make run` (set up from nothing, run the demo) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Most tests wait on real processes and services, so more workers than cores pay off;
# --dist worksteal lets an idle worker take tests queued on a busy one (the slow tests
# at the end no longer leave the others idle).
TEST_WORKERS ?= 4
STAMP  := $(VENV)/.installed

.PHONY: run test lint types format docs generated-docs bench dashboards clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "dagwatch needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dagwatch db migrate
	$(BIN)/dagwatch standalone

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=20 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Type-check the packages (the configuration is [tool.mypy] in pyproject.toml).
types: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The documentation site (mkdocs.yml), built into site/: every link and anchor must hold.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Regenerate every generated page of docs/ from the code (tests fail when one is stale).
generated-docs: $(STAMP)
	$(BIN)/python -m metrics.docs --write docs/metrics.md
	$(BIN)/python -m engine.cli.reference --write docs/reference/

# Regenerate the Grafana dashboards and alert rules from the metric catalog.
dashboards: $(STAMP)
	$(BIN)/python -m metrics.mixin

bench: $(STAMP)
	$(BIN)/python bench/parse_files.py
	$(BIN)/python bench/scheduler_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache site
