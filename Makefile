# Thin entry points; the scripts do the work. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv

.PHONY: setup run test bench lint fmt clean rebuild rotate-key

# Bytecode is compiled at install, ours too: where PYTHONDONTWRITEBYTECODE is set
# (as on the development machine) no process writes it, and each start compiled
# every module it imports again: about 3 s of CPU a process, 1 s with it compiled.
setup: ## install uv if missing, then the locked workspace, compiled to bytecode
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --frozen --quiet --compile-bytecode
	@$(UV) run --frozen python -m compileall -q libs/events/src services/*/src bench >/dev/null

run: setup ## the whole platform on the embedded default; gateway on http://127.0.0.1:8000
	@bash scripts/run.sh

test: setup ## unit, integration (SQLite, PostgreSQL), contract and end-to-end tests
	@bash scripts/test.sh $(ARGS)

lint: setup
	@$(UV) run ruff check .
	@$(UV) run ruff format --check .
	@for src in libs/events/src services/*/src; do $(UV) run mypy $$src || exit 1; done

fmt: setup
	@$(UV) run ruff format .
	@$(UV) run ruff check --fix .

bench: setup ## load through the gateway against physical baselines: make bench [ARGS="--postgres --profile --million"]
	@$(UV) run --frozen python -m bench $(ARGS)

rebuild: setup ## drop a read model and replay it: make rebuild MODEL=chart|audit
	@$(UV) run --frozen python -m projections rebuild $(MODEL)

rotate-key: setup ## new token signing key; the old one stays published until its tokens expire
	@$(UV) run --frozen python -m identity rotate-key

clean:
	rm -rf var/
