# SocialFlow. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
STAMP := $(VENV)/.install-stamp
# One pytest worker per core (at most 4), a test file per worker: each worker starts its own
# embedded PostgreSQL and Redis. `make test PYTEST_ARGS="-n 0"` runs in one process.
XDIST_ARGS ?= -n auto --maxprocesses 4 --dist loadfile
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

$(UV):
	@$(PYTHON) -m venv $(TOOLS)
	@$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(UV) sync --frozen --extra embedded --python $(PYTHON) --quiet
	@touch $(STAMP)

.PHONY: install
install: $(STAMP) ## Create .venv and install the locked dependencies (skipped when unchanged)

.PHONY: run
run: $(STAMP) ## Run API + relay + worker (embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL)
	@$(VENV)/bin/socialflow dev

.PHONY: test
test: $(STAMP) ## Run the whole test suite against real PostgreSQL + pgvector and Redis
	@bash scripts/ensure-test-packages
	@$(VENV)/bin/pytest $(XDIST_ARGS) $(PYTEST_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

.PHONY: format
format: $(STAMP) ## Apply ruff's fixes and formatting
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

.PHONY: bench
bench: $(STAMP) ## Run every benchmark in bench/ and print their tables
	@set -e; shopt -s nullglob; for script in bench/[a-z]*.py; do echo "== $$script"; $(VENV)/bin/python $$script; done

.PHONY: migrate
migrate: $(STAMP) ## Bring the shared schema to head (the embedded database unless DATABASE_URL)
	@$(VENV)/bin/socialflow migrate

.PHONY: lock
lock: $(UV) ## Re-resolve uv.lock after editing pyproject.toml
	@$(UV) lock

.PHONY: clean
clean: ## Remove the virtual environment, tools and caches (keeps .data/)
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'
