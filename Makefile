# The verbs: make run, make test, make lint, make bench, make vendor, make lock.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test lint bench vendor lock venv clean

## run: install what is missing, migrate, seed demo data, then start web, worker, beat, Redis, registry and fleet
run: venv
	@scripts/system-deps.sh run
	$(PY) manage.py migrate --noinput
	$(PY) manage.py run_portal

## test: install what is missing, then run the whole suite (PostgreSQL when DATABASE_URL is set, else SQLite)
test: venv
	@scripts/system-deps.sh test
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: ruff over the code
lint: venv
	$(VENV)/bin/ruff check .

## bench: every benchmark under bench/ (see bench/README.md)
bench: venv
	@for b in bench/*/run; do echo "== $$b"; $$b || exit 1; done

## vendor: refresh the front-end packages under static/vendor/ from the npm registry
vendor:
	scripts/vendor-static.sh

## lock: recompile requirements*.lock from requirements*.in
lock: venv
	$(VENV)/bin/uv pip compile -q requirements.in -o requirements.lock --python-version 3.11
	$(VENV)/bin/uv pip compile -q requirements-dev.in -o requirements-dev.lock --python-version 3.11

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.lock requirements-dev.lock
	@test -x $(PY) || python3 -m venv $(VENV) || { echo "python3 -m venv failed: on Debian run  apt-get install -y python3-venv"; exit 1; }
	@$(VENV)/bin/pip install -q "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip sync -q --python $(PY) requirements.lock requirements-dev.lock
	@touch $@

clean:
	rm -rf $(VENV) var test-artifacts staticfiles
