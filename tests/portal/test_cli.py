"""The command line client's own rules, before it talks to a portal: where it finds the URL and the token, the config
file `imp login` writes, and the exit codes of usage errors and of a portal it cannot reach. Talking to a running
portal: tests/hosts/test_cli_walk.py and the API tests."""

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from portal.cli import config, exits
from tests.helpers import ROOT, free_port


def imp(*argv, env=None, stdin=None):
    """Run the CLI as a pipeline would (a process of its own); returns (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "portal.cli", *argv], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def clean_env(tmp_path):
    """An environment with no IMP_* variables and a home of its own (so no config file unless the test writes one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMP_") and k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(tmp_path / "home")
    return env


def test_it_is_installed_as_the_imp_console_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["imp"] == "portal.cli:main"
    assert "websockets==" in (ROOT / "requirements.in").read_text()  # a run-time dependency, pinned


def test_help_lists_every_exit_code(clean_env):
    code, out, _ = imp("--help", env=clean_env)
    assert code == 0
    for number, text in exits.DESCRIPTIONS.items():
        assert f"{number}  {text}" in out


def test_bad_arguments_exit_2(clean_env):
    code, _, err = imp("build", env=clean_env)
    assert code == exits.USAGE == 2
    assert "definition" in err


def test_without_a_url_it_says_how_to_give_one_and_exits_2(clean_env):
    code, _, err = imp("whoami", env=clean_env)
    assert code == exits.USAGE
    assert "IMP_URL" in err and "imp login" in err


def test_without_a_token_it_exits_3(clean_env):
    code, _, err = imp("whoami", env={**clean_env, "IMP_URL": "http://127.0.0.1:9"})
    assert code == exits.ACCESS == 3
    assert "IMP_TOKEN" in err


def test_a_portal_it_cannot_reach_exits_6(clean_env):
    port = free_port()  # nothing listens there
    code, _, err = imp("builds", "show", "1", env={**clean_env, "IMP_URL": f"http://127.0.0.1:{port}", "IMP_TOKEN": "x"})
    assert code == exits.UNAVAILABLE == 6
    assert f"cannot reach http://127.0.0.1:{port}" in err


def test_the_config_file_is_written_readable_by_its_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("IMP_CONFIG", raising=False)
    path = config.save(url="https://portal.example/", token='imp_"quoted\\secret')
    assert path == tmp_path / "cfg" / "imp" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert tomllib.loads(path.read_text()) == {"url": "https://portal.example", "token": 'imp_"quoted\\secret'}


def test_a_second_login_never_leaves_the_file_readable_by_others(tmp_path, monkeypatch):
    monkeypatch.setenv("IMP_CONFIG", str(tmp_path / "config.toml"))
    path = config.save(url="https://a", token="one")
    path.chmod(0o644)  # someone loosened it
    Path(str(path) + ".tmp").write_text("stale")
    os.chmod(str(path) + ".tmp", 0o666)
    config.save(url="https://b", token="two")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config.read_file(path) == {"url": "https://b", "token": "two"}


def test_the_environment_wins_over_the_config_file_and_url_flag_over_both(tmp_path, monkeypatch):
    monkeypatch.setenv("IMP_CONFIG", str(tmp_path / "config.toml"))
    config.save(url="https://from-file", token="file-token")
    monkeypatch.delenv("IMP_URL", raising=False)
    monkeypatch.delenv("IMP_TOKEN", raising=False)
    assert config.load() == config.Settings(url="https://from-file", token="file-token", source=str(tmp_path / "config.toml"))
    monkeypatch.setenv("IMP_URL", "https://from-env")
    monkeypatch.setenv("IMP_TOKEN", "env-token")
    assert config.load() == config.Settings(url="https://from-env", token="env-token", source="environment")
    assert config.load(url="https://flag/").url == "https://flag"


def test_a_broken_config_file_is_named(tmp_path, monkeypatch, clean_env):
    (tmp_path / "config.toml").write_text("url = [unclosed")
    code, _, err = imp("whoami", env={**clean_env, "IMP_CONFIG": str(tmp_path / "config.toml")})
    assert code == exits.USAGE
    assert str(tmp_path / "config.toml") in err


def test_login_checks_the_token_and_keeps_it_for_its_owner_only(portal_server, personas, make_token, clean_env):
    secret = make_token(personas.developer, "read", "build")
    code, _, err = imp("--url", portal_server.url, "login", "--token-stdin", env=clean_env, stdin="impt_wrong\n")
    assert code == exits.ACCESS, err
    path = Path(clean_env["HOME"]) / ".config" / "imp" / "config.toml"
    assert not path.exists()
    code, out, err = imp("--url", portal_server.url, "login", "--token-stdin", env=clean_env, stdin=secret + "\n")
    assert code == 0, err
    assert "developer" in out and str(path) in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {"url": portal_server.url, "token": secret}
    code, out, err = imp("whoami", env=clean_env)  # from the file now
    assert code == 0, err
    assert out.startswith(f"developer (scopes: read, build; teams: {personas.team.slug} (developer)")

