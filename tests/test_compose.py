"""compose.yaml describes the production topology (no container engine runs here, so the file itself is checked)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def test_it_has_the_production_services():
    assert {"postgres", "redis", "registry", "web", "worker", "beat"} <= set(SERVICES)


def test_postgres_has_a_healthcheck_that_the_portal_waits_for():
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_web_worker_and_beat_start_after_migrations_and_redis():
    for name in ("web", "worker", "beat"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_the_portal_image_is_built_from_the_repository_and_the_worker_carries_podman():
    assert SERVICES["migrate"]["build"]["dockerfile"] == "Containerfile"
    assert SERVICES["worker"]["build"]["target"] == "worker"
    containerfile = (ROOT / "Containerfile").read_text()
    worker_stage = containerfile.split("AS worker", 1)[1]
    assert "podman" in worker_stage and "skopeo" in worker_stage


def test_the_worker_listens_on_every_queue():
    command = SERVICES["worker"]["command"]
    assert command[command.index("-Q") + 1].split(",") == ["builds", "images", "hosts", "default"]


def test_every_portal_process_gets_production_settings():
    for name in ("migrate", "web", "worker", "beat"):
        env = SERVICES[name]["environment"]
        assert env["DEBUG"] == "false", name
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"], name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), name
        assert env["FIELD_ENCRYPTION_KEYS"].startswith("${FIELD_ENCRYPTION_KEYS:?"), name


def test_the_compose_environment_is_documented_in_env_example():
    documented = {line.partition("=")[0] for line in (ROOT / ".env.example").read_text().splitlines()
                  if line and not line.startswith("#")}
    assert set(SERVICES["web"]["environment"]) <= documented
