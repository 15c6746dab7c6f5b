"""Settings come from the environment; production refuses to start without its secrets and passes check --deploy."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

pytestmark = pytest.mark.processes  # most tests here start the portal's own processes

ROOT = Path(__file__).resolve().parents[2]


def production_env(**overrides):
    """The production settings .env.example documents, with the secrets generated as it says."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    env["FIELD_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    env["AUDIT_HMAC_KEY"] = secrets.token_urlsafe(32)
    env["PORTAL_VAR_DIR"] = str(ROOT / "var" / "prod-check")
    env.update(overrides)
    return env


def manage(*args, env):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_check_deploy_is_clean_under_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = manage("check", env=production_env(SECRET_KEY=""))
    assert result.returncode != 0
    assert result.stderr == "Image Mode Portal cannot start: SECRET_KEY must be set when DEBUG is off (see .env.example).\n"


def test_production_refuses_to_start_without_an_encryption_key():
    result = manage("check", env=production_env(FIELD_ENCRYPTION_KEYS=""))
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS must be set" in result.stderr


def test_production_refuses_to_start_without_an_audit_key():
    result = manage("check", env=production_env(AUDIT_HMAC_KEY=""))
    assert result.returncode != 0
    assert "AUDIT_HMAC_KEY must be set" in result.stderr


def test_production_refuses_a_trusted_proxy_that_is_not_an_address():
    result = manage("check", env=production_env(TRUSTED_PROXIES="10.0.0.0/8,proxy.example.com"))
    assert result.returncode != 0
    assert "TRUSTED_PROXIES: 'proxy.example.com' is not an IP address or network" in result.stderr


def test_env_example_lists_every_variable_the_settings_read():
    source = "".join(path.read_text() for path in [*(ROOT / "portal").glob("settings*.py"), ROOT / "portal" / "environment.py"])
    import re

    read = set(re.findall(r'env\.(?:str|bool|int|float|list|db|email_url)\(\s*"([A-Z_]+)"', source))
    read |= set(re.findall(r'_required_secret\("([A-Z_]+)"\)', source))
    documented = {line.partition("=")[0] for line in (ROOT / ".env.example").read_text().splitlines()
                  if line and not line.startswith("#")}
    assert read - documented - {"PORTAL_VAR_DIR"} == set()


def test_defaults_work_on_a_laptop(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY",
                                                            "FIELD_ENCRYPTION_KEYS")}
    env["PORTAL_VAR_DIR"] = str(tmp_path)
    code = ("from django.conf import settings as s; print(s.DATABASES['default']['NAME']); print(s.REDIS_URL); "
            "print(s.CELERY_BROKER_URL)")
    result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT,
                            env={**env, "DJANGO_SETTINGS_MODULE": "portal.settings"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    database, redis_url, broker = result.stdout.split()
    assert database == str(tmp_path / "portal.sqlite3")
    assert redis_url == f"unix://{tmp_path}/redis.sock" and broker == f"redis+socket://{tmp_path}/redis.sock"
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o777 == 0o600


def settings_read(code, *, env):
    """`code` run in a new process that reads the settings as manage.py's would (the same settings module), without
    starting Django's apps: what a setting ends up as is decided there."""
    return subprocess.run([sys.executable, "-c", "import os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
                           f"'portal.settings'); from django.conf import settings as s; {code}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_metrics_are_off_in_production_until_a_token_or_networks_are_set_and_make_run_opens_loopback():
    code = "print(s.METRICS_TOKEN == '', s.METRICS_ALLOWED_NETWORKS)"
    production = settings_read(code, env=production_env(METRICS_TOKEN="", METRICS_ALLOWED_NETWORKS=""))
    assert production.stdout.splitlines()[-1] == "True []", production.stderr
    laptop = settings_read(code, env={**os.environ, "DEBUG": "true", "METRICS_TOKEN": ""})
    assert laptop.stdout.splitlines()[-1] == "True ['127.0.0.1/32', '::1/128']", laptop.stderr


@pytest.mark.parametrize("name,value,says", [
    ("DATABASE_URL", "postgres//db.example/portal", "DATABASE_URL must be postgres://USER:PASSWORD@HOST:5432/NAME"),
    ("DATABASE_URL", "mysql://portal@db.example/portal", "DATABASE_URL must be postgres://USER:PASSWORD@HOST:5432/NAME"),
    ("DATABASE_URL", "postgres://portal@db.example:port/portal", "DATABASE_URL is not a database URL: Port could not"),
    ("REDIS_URL", "redis.example:6379", "REDIS_URL must start with redis://, rediss:// (TLS) or unix://"),
    ("SITE_URL", "portal.example.com", "SITE_URL must be the address people use"),
    ("HOSTS_AGENT_URL", "portal.example.com:8001", "HOSTS_AGENT_URL must be an address such as https://"),
    ("EMAIL_URL", "nonsense", "EMAIL_URL is not an email URL"),
    ("HOSTS_POLL_SECONDS", "often", "HOSTS_POLL_SECONDS is not valid: invalid literal for int()"),
    ("FIELD_ENCRYPTION_KEYS", "", "FIELD_ENCRYPTION_KEYS must be set when DEBUG is off"),
    ("METRICS_ALLOWED_NETWORKS", "10.0.0.0/8,prometheus", "METRICS_ALLOWED_NETWORKS: 'prometheus' is not an IP"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT must be plain or json (got 'xml')"),
    ("RUN_LOG_POLL_SECONDS", "0", "RUN_LOG_POLL_SECONDS (0) must be more than 0"),
])
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(name, value, says):
    result = manage("check", env=production_env(**{name: value}))
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Image Mode Portal cannot start: {says}"), result.stderr


@pytest.fixture
def unreachable_database():
    from tests.helpers import free_port

    return f"postgres://portal:pw-not-shown@127.0.0.1:{free_port()}/portal"


@pytest.mark.parametrize("process", [
    ["manage.py", "migrate"],
    ["-m", "daphne", "-b", "127.0.0.1", "-p", "0", "portal.asgi:application"],
    ["-m", "portal.machine_server", "--port", "0"],
    ["-m", "celery", "-A", "portal", "worker", "-Q", "default", "-c", "1"],
    ["-m", "celery", "-A", "portal", "beat", "-s", "/dev/null/schedule"],
], ids=["migrate", "web", "agents", "worker", "beat"])
def test_a_process_that_cannot_reach_its_database_in_production_stops_with_one_line(process, unreachable_database,
                                                                                    redis_server):
    # migrate borrows from the pool, which says why only after DATABASE_POOL_TIMEOUT (10 s by default): one second
    # shows the same line.
    env = production_env(DATABASE_URL=unreachable_database, REDIS_URL=redis_server.url, DATABASE_POOL_TIMEOUT="1")
    result = subprocess.run([sys.executable, *process], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    port = unreachable_database.rsplit(":", 1)[1].split("/")[0]
    [line] = [line for line in output.splitlines() if "cannot start" in line]
    assert f"Image Mode Portal cannot start: DATABASE_URL: cannot connect to 127.0.0.1:{port}, database portal: " in line
    assert "Connection refused" in line
    assert "Traceback" not in output and "pw-not-shown" not in output


def test_production_refuses_to_stream_downloads_through_the_web_process():
    result = manage("check", env=production_env(DOWNLOADS_VIA="stream"))
    assert result.returncode != 0
    assert "DOWNLOADS_VIA=stream sends multi-gigabyte files through the web process" in result.stderr


def test_object_storage_in_s3_needs_its_bucket_named():
    result = manage("check", env=production_env(OBJECT_STORAGE="s3"))
    assert result.returncode != 0 and "S3_BUCKET must be set when OBJECT_STORAGE=s3" in result.stderr


def test_a_web_process_whose_bucket_refuses_its_key_stops_at_start_naming_the_setting(moto_server_checking_keys,
                                                                                      tmp_path):
    moto_server = moto_server_checking_keys
    bucket = f"portal-start-{secrets.token_hex(4)}"
    moto_server.client().create_bucket(Bucket=bucket)
    env = production_env(OBJECT_STORAGE="s3", S3_BUCKET=bucket, S3_ENDPOINT_URL=moto_server.endpoint,
                         S3_ACCESS_KEY_ID=moto_server.access_key, S3_SECRET_ACCESS_KEY="not-the-secret",
                         DOWNLOADS_VIA="presigned", DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}")
    result = subprocess.run([sys.executable, "-c", "import portal.asgi"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "Image Mode Portal cannot start: Object storage refused the credentials" in result.stderr
    assert "S3_SECRET_ACCESS_KEY" in result.stderr and "Traceback" not in result.stderr
    env["S3_SECRET_ACCESS_KEY"] = moto_server.secret_key
    result = subprocess.run([sys.executable, "-c", "import portal.asgi; print('started')"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "started", result.stderr
