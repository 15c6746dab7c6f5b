"""Where the CLI finds the portal and its token: the environment first, then the config file.

IMP_URL and IMP_TOKEN win (a CI job sets them from its secrets); otherwise ~/.config/imp/config.toml (or
$XDG_CONFIG_HOME/imp/config.toml, or the file IMP_CONFIG names), which `imp login` writes with mode 0600 because it
holds a secret. `--url` on the command line wins over both; the token has no flag, so it never shows in `ps` or in a
shell's history.
"""

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w


@dataclass(frozen=True)
class Settings:
    url: str
    token: str
    source: str  # where they came from, for messages: "environment", the file's path, ...


def config_path() -> Path:
    if os.environ.get("IMP_CONFIG"):
        return Path(os.environ["IMP_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "imp" / "config.toml"


def read_file(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return {key: value for key, value in data.items() if key in ("url", "token") and isinstance(value, str)}


def load(*, url: str | None = None) -> Settings:
    path = config_path()
    stored = read_file(path)
    env_url, env_token = os.environ.get("IMP_URL", ""), os.environ.get("IMP_TOKEN", "")
    chosen_url = url or env_url or stored.get("url", "")
    token = env_token or stored.get("token", "")
    source = "environment" if env_token else str(path)
    if not chosen_url:
        raise ConfigError("no portal URL: set IMP_URL, pass --url, or run `imp login`")
    if not chosen_url.startswith(("http://", "https://")):
        raise ConfigError(f"the portal URL must start with http:// or https://, not {chosen_url!r}")
    return Settings(url=chosen_url.rstrip("/"), token=token, source=source)


def save(*, url: str, token: str) -> Path:
    """Write the config file readable by its owner only (created 0600, never world-readable even for a moment)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = tomli_w.dumps({"url": url.rstrip("/"), "token": token})
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)  # an older tmp file may have had other bits
    os.replace(tmp, path)
    return path


class ConfigError(Exception):
    pass
