"""docs/architecture.md stays true: every file and folder it names exists, every dotted name of the portal's code it
names (`builds.services.build_start`, `portal.registry.fragment_url`, `portal.Run`) resolves, and every function its
flow diagrams name is defined in the code."""

import importlib
import re
from pathlib import Path

import pytest
from django.apps import apps

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()
CODE = "\n".join(path.read_text() for package in ("portal", "builds", "hosts")
                 for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts)

PATH = re.compile(r"`([A-Za-z0-9_.-]+/[A-Za-z0-9_./-]*)`")
DOTTED = re.compile(r"(?<![\w/.<])((?:portal|builds|hosts)(?:\.[A-Za-z_]\w*)+)")
FENCED = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
CALLED = re.compile(r"(?<![\w.])(_?[a-z]+(?:_[a-z]+)+|_[a-z]+)\b")  # snake_case words: functions, or words of the text


def resolves(name):
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError:
            break
        return True
    if len(parts) == 2:  # app_label.Model
        try:
            apps.get_model(*parts)
        except LookupError:
            return False
        return True
    return False


def test_the_files_it_names_exist():
    named = {path for path in PATH.findall(DOC) if not path.endswith(".md") and not path.startswith(("../", "var/"))}
    missing = [path for path in named if not (ROOT / path).exists() and not (ROOT / "templates" / path).exists()]
    assert not missing, f"docs/architecture.md names files that do not exist: {sorted(missing)}"


@pytest.mark.django_db  # importing portal.asgi checks that the database answers, as web does at start
def test_the_code_it_names_exists():
    missing = sorted({name for name in DOTTED.findall(DOC) if not name.endswith(".md") and not resolves(name)})
    assert not missing, f"docs/architecture.md names code that does not exist: {missing}"


def test_the_functions_its_diagrams_name_are_defined():
    diagrams = [body for language, body in FENCED.findall(DOC) if not language]  # the flows (the layout is mermaid)
    assert len(diagrams) >= 3
    names = {word for diagram in diagrams for word in CALLED.findall(diagram)}
    defined = set(re.findall(r"^\s*(?:async )?def (\w+)", CODE, re.M)) | set(re.findall(r"^(\w+) = ", CODE, re.M))
    # Words of the diagrams' text that are not code: kinds of run, queues, settings fields and the like.
    words = {"host_ids", "next_poll_at", "select_for_update"}
    undefined = sorted(names - words - defined)
    assert not undefined, f"docs/architecture.md's diagrams name functions that are not defined: {undefined}"
