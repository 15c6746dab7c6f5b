"""The layers hold: import-linter's contracts (pyproject.toml) pass on the code, and fail on a copy of it with one
import across a layer planted, so a contract that stopped checking anything would not pass unnoticed."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd):
    result = subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def copy_of_the_code(tmp_path):
    for package in ("portal", "builds", "hosts"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


OWN = "Builds' own modules import none of its nested apps"


def test_the_contracts_hold():
    returncode, output = lint_imports(ROOT)
    assert returncode == 0, output
    assert "Contracts: 3 kept, 0 broken." in output


@pytest.mark.parametrize(("module", "planted", "contract"), [
    ("portal/access.py", "from builds import models", "The core imports no feature app"),
    ("portal/access.py", "import hosts.models", "The core imports no feature app"),
    ("builds/compare.py", "from hosts.models import Host", "Builds never imports hosts"),
    ("builds/views.py", "from builds.releases.models import Promotion", OWN),
    ("builds/services.py", "from builds.diskimages import models", OWN),
    ("builds/releases/views.py", "from builds.diskimages.models import DiskImage", OWN),
    ("builds/releases/apply.py", "from builds.supplychain import services", OWN),
    ("builds/diskimages/views.py", "from builds.supplychain.models import Signature", OWN),
    ("builds/pipeline.py", "from builds.supplychain import signing", OWN),
])
def test_an_import_across_a_layer_breaks_its_contract(tmp_path, module, planted, contract):
    code = copy_of_the_code(tmp_path)
    path = code / module
    path.write_text(path.read_text() + f"\n\ndef planted():\n    {planted}\n")  # function-level imports count too
    returncode, output = lint_imports(code)
    assert returncode == 1, output
    assert f"{contract} BROKEN" in output


def test_the_wiring_app_may_import_every_feature(tmp_path):
    code = copy_of_the_code(tmp_path)
    path = code / "portal" / "demo" / "tasks.py"
    path.write_text(path.read_text() + "\nimport hosts.models  # noqa: E402, F401\n")
    returncode, output = lint_imports(code)
    assert returncode == 0, output


def test_the_nested_apps_may_import_builds_and_disk_images_may_read_releases(tmp_path):
    code = copy_of_the_code(tmp_path)
    for module, planted in (("builds/releases/policy.py", "import builds.pipeline"),
                            ("builds/diskimages/tasks.py", "import builds.releases.gate")):
        path = code / module
        path.write_text(path.read_text() + f"\n\ndef planted():\n    {planted}\n")
    returncode, output = lint_imports(code)
    assert returncode == 0, output


def function_level_imports():
    """(path, line number, the line and the one above it) for each import inside a function of the portal's code."""
    for package in ("portal", "builds", "hosts"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            source = path.read_text()
            lines = source.splitlines()
            for function in ast.walk(ast.parse(source)):
                if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    for node in ast.walk(function):
                        if isinstance(node, ast.Import | ast.ImportFrom):
                            yield path.relative_to(ROOT), node.lineno, "\n".join(lines[node.lineno - 2:node.lineno])


def test_a_function_level_import_is_where_models_first_load_or_names_the_cycle_it_breaks():
    """import-linter sees through a function-level import, but a reader does not: one that only dodges an import cycle
    hides a design fault. Each is in an app's apps.py (models load only once the app registry is ready) or says, on its
    line or the one above, which cycle of calls at run time it breaks."""
    unexplained = [f"{path}:{number}" for path, number, text in function_level_imports()
                   if path.name != "apps.py" and "cycle" not in text]
    assert unexplained == []


def test_no_import_cycle_crosses_apps():
    """scripts/import_cycles.py reads every import (function-level ones too) from the source: no set of modules that
    import each other spans two apps."""
    result = subprocess.run([sys.executable, ROOT / "scripts" / "import_cycles.py", "--list"], capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.startswith("files in an import cycle across apps: 0 (0 cycles)"), result.stdout
