# The verbs: make run, make test, make lint, make bench, make vendor, make lock.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# Bytecode is cached under var/pycache, out of the source tree, never switched off: each Python process the suite starts
# (its xdist workers, daphne, Celery workers, manage.py) would otherwise compile Django, the libraries and the portal
# from source again, some 3 s of CPU each. An environment that sets PYTHONDONTWRITEBYTECODE gets it cleared here.
export PYTHONPYCACHEPREFIX := $(CURDIR)/var/pycache
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test deploy-test lint audit bench vendor lock venv venv-run clean

## run: install what is missing, migrate, seed demo data, then start web, worker, beat, Redis, registry and fleet
# run_portal migrates first, in its own process: a `manage.py migrate` of its own started Django once more (some 3 s of
# CPU) to find, on every run but the first, nothing to apply.
run: venv-run
	@scripts/system-deps.sh run
	$(PY) manage.py run_portal

## test: install what is missing, then run the whole suite (PostgreSQL when DATABASE_URL is set, else SQLite)
test: venv
	@scripts/system-deps.sh test
	$(PY) -m pytest $(PYTEST_ARGS)

## deploy-test: compose.yaml's production stack, built from Debian's packages and tested through its TLS proxy in
## Chromium (docs/deploy.md); about 10 minutes the first time on a machine, 4 once its images are cached
deploy-test: venv
	@scripts/system-deps.sh deploy
	$(PY) -m pytest deploy/tests $(DEPLOY_TEST_ARGS)

## lint: ruff over the code, bandit at medium severity and above (a finding left must carry a reviewed `# nosec`), and
## import-linter's layer contracts (pyproject.toml: the core imports no feature app, builds never imports hosts, builds'
## own modules import neither releases nor disk images)
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/bandit --quiet -c pyproject.toml -r . --severity-level medium
	$(VENV)/bin/lint-imports

## audit: pip-audit over the pinned dependencies: fails on a known vulnerability; says so plainly, and passes, when the
## advisory database cannot be reached (AUDIT_ARGS=--strict fails then too)
audit: venv
	$(PY) scripts/audit.py $(AUDIT_ARGS)

## bench: every benchmark under bench/ (see bench/README.md)
bench: venv
	@for b in bench/*/run; do echo "== $$b"; $$b || exit 1; done

## vendor: refresh the front-end packages under static/vendor/ from the npm registry
vendor:
	scripts/vendor-static.sh

## lock: recompile the locks, with hashes: run time (the production image), then + make run's extras, then + dev tools
lock: $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile -q --generate-hashes requirements.in -o requirements.lock --python-version 3.11
	$(VENV)/bin/uv pip compile -q --generate-hashes requirements-run.in -o requirements-run.lock --python-version 3.11
	$(VENV)/bin/uv pip compile -q --generate-hashes requirements-dev.in -o requirements-dev.lock --python-version 3.11

## venv: .venv with everything (make test, make lint); venv-run: without the test tools (make run)
venv: $(VENV)/.installed
venv-run: $(VENV)/.installed-run

# The venv gets no pip of its own: uv goes in through the pip of the Python that made it, run on that pip's own bytecode
# (not var/pycache's, empty in a new clone): a venv with a pip of its own (ensurepip) and uv installed by that pip cost
# some 6 s of CPU, this 2.5. Where that Python has no pip (Debian without python3-pip), the venv gets one after all.
$(VENV)/bin/uv:
	@test -x $(PY) || python3 -m venv --without-pip $(VENV) || { echo "python3 -m venv failed: on Debian run  apt-get install -y python3-venv"; exit 1; }
	@env -u PYTHONPYCACHEPREFIX python3 -m pip --python $(PY) install -q "uv==$(UV_VERSION)" 2>/dev/null \
	  || { $(PY) -m ensurepip >/dev/null && $(PY) -m pip install -q "uv==$(UV_VERSION)"; } \
	  || { echo "installing uv failed: on Debian run  apt-get install -y python3-venv python3-pip"; exit 1; }

# Each lock is complete (it holds the one before it, at the same versions), so one file installs each set.
# The project itself goes in editable and without dependencies (the lock installed them): that is what puts the `imp`
# command (pyproject.toml's [project.scripts]) in .venv/bin.
$(VENV)/.installed: requirements.lock requirements-run.lock requirements-dev.lock | $(VENV)/bin/uv
	$(VENV)/bin/uv pip sync -q --require-hashes --python $(PY) requirements-dev.lock
	$(VENV)/bin/uv pip install -q --no-deps --python $(PY) -e .
	@touch $@ $(VENV)/.installed-run

$(VENV)/.installed-run: requirements.lock requirements-run.lock | $(VENV)/bin/uv
	$(VENV)/bin/uv pip install -q --require-hashes --python $(PY) -r requirements-run.lock
	$(VENV)/bin/uv pip install -q --no-deps --python $(PY) -e .
	@touch $@

clean:
	rm -rf $(VENV) var test-artifacts staticfiles
