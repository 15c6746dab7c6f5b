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


# Heavy libraries that only some code paths use, each imported inside the functions that use it: every Python process
# the portal starts (manage.py commands, Celery workers, daphne, the simulator, the suite's workers) starts Django, and
# would otherwise pay for loading them whether or not it takes that path. CPU to import each, on a warm bytecode cache.
HEAVY_IMPORTS = {
    "paramiko": "fresh SSH connections (portal.ssh); with invoke, PyNaCl and its ciphers, about 0.2 s",
    "portal.sshpool": "kept-open SSH connections; it loads asyncssh, about 0.25 s",
    "cyclonedx": "writing a build's SBOM (builds.supplychain.sbom), about 0.1 s",
    "univers": "comparing package versions with an advisory's ranges (builds.supplychain.vulns), about 0.1 s",
    "pykickstart": "reading a kickstart (builds.diskimages.kickstart); it loads requests, about 0.1 s",
    "tomlkit": "writing a disk image configuration as TOML (builds.diskimages.diskconfig), tens of ms",
}


def imported_names(node):
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    module = "." * node.level + (node.module or "")  # `from . import x` has no module: its name is the dots
    return [module] + [f"{module.rstrip('.')}.{alias.name}" if node.module else f"{module}{alias.name}"
                       for alias in node.names]


def is_heavy(name):
    return any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY_IMPORTS)


def function_level_imports():
    """(path, line number, the line and the one above it, the names it imports) for each import inside a function of
    the portal's code."""
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
                            yield (path.relative_to(ROOT), node.lineno, "\n".join(lines[node.lineno - 2:node.lineno]),
                                   imported_names(node))


def test_a_function_level_import_is_where_models_first_load_or_names_the_cycle_it_breaks():
    """import-linter sees through a function-level import, but a reader does not: one that only dodges an import cycle
    hides a design fault. Each is in an app's apps.py (models load only once the app registry is ready), says, on its
    line or the one above, which cycle of calls at run time it breaks, or loads one of the heavy libraries that only
    some paths use (HEAVY_IMPORTS)."""
    unexplained = [f"{path}:{number}" for path, number, text, names in function_level_imports()
                   if path.name != "apps.py" and "cycle" not in text and not any(map(is_heavy, names))]
    assert unexplained == []


def test_starting_django_loads_none_of_the_heavy_libraries():
    """What HEAVY_IMPORTS is for: a process that starts Django (django.setup(), as every manage.py command, worker and
    server does) has loaded none of them, nor asyncssh, until a path that uses one runs."""
    heavy = [*HEAVY_IMPORTS, "asyncssh"]
    code = ("import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'portal.settings'); django.setup(); "
            "print(' '.join(sorted(h for h in sys.argv[1:] if h in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code, *heavy], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def test_each_heavy_library_is_imported_where_it_is_used():
    """The allow-list names only what some function imports: a name left behind after its import moved would let a
    later function-level import through unexplained."""
    imported = {name for *_, names in function_level_imports() for name in names}
    assert [heavy for heavy in HEAVY_IMPORTS if not any(n == heavy or n.startswith(heavy + ".") for n in imported)] == []


def test_no_import_cycle_crosses_apps():
    """scripts/import_cycles.py reads every import (function-level ones too) from the source: no set of modules that
    import each other spans two apps."""
    result = subprocess.run([sys.executable, ROOT / "scripts" / "import_cycles.py", "--list"], capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.startswith("files in an import cycle across apps: 0 (0 cycles)"), result.stdout
